"""Layers: deformable conv (detectron2's interface on torchvision, a sampling kernel or detectron2's) and GCNet's
context block."""
from .context_block import ContextBlock  # noqa: F401
from .deform_conv import (  # noqa: F401
    DEFORM_BACKENDS,
    DeformConv,
    ModulatedDeformConv,
    build_deform_conv,
    deform_backend_info,
    deform_conv2d,
    has_detectron2_C,
)
from .norm import FROZEN_STATS_BN, FrozenStatsBatchNorm2d  # noqa: F401
