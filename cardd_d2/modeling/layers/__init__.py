"""Layers: deformable conv on torchvision (detectron2 semantics) and GCNet's context block."""
from .context_block import ContextBlock  # noqa: F401
from .deform_conv import (  # noqa: F401
    DeformConv,
    ModulatedDeformConv,
    deform_backend_info,
    deform_conv2d,
    get_deform_conv_classes,
    has_detectron2_C,
    resolve_deform_backend,
)
