"""Backbones registered in detectron2's BACKBONE_REGISTRY on import."""
from .resnet import (  # noqa: F401
    CarDDBottleneckBlock,
    build_cardd_resnet,
    build_cardd_resnet_backbone,
    build_cardd_resnet_fpn_backbone,
)
