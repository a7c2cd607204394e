"""The detectron2 config values a model needs to run converted mmdetection 2.x weights as mmdetection does."""
from __future__ import annotations

from typing import List, Optional, Tuple

from .mmdet_heads import HEAD_FAMILIES

__all__ = ["MMDET_PIXEL_MEAN", "MMDET_PIXEL_STD", "mmdet_style_overrides", "config_overrides"]

# mmdet's "pytorch"-style ImageNet normalisation (RGB).
MMDET_PIXEL_MEAN = (123.675, 116.28, 103.53)
MMDET_PIXEL_STD = (58.395, 57.12, 57.375)

# read_head_facts name -> config key (a fact that is None sets nothing)
_HEAD_FACT_KEYS = (
    ("cls_agnostic_bbox_reg", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"),
    ("cls_agnostic_mask", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK"),
    ("mask_on", "MODEL.MASK_ON"),
    ("mask_info_flow", "MODEL.HTC.MASK_INFO_FLOW"),
)


def mmdet_style_overrides() -> List[Tuple[str, object]]:
    """The (key, value) pairs every model running mmdet "pytorch"-style ResNet weights needs: stride in the 3x3
    conv, RGB input with mmdet's mean and std."""
    return [
        ("MODEL.RESNETS.STRIDE_IN_1X1", False),
        ("INPUT.FORMAT", "RGB"),
        ("MODEL.PIXEL_MEAN", list(MMDET_PIXEL_MEAN)),
        ("MODEL.PIXEL_STD", list(MMDET_PIXEL_STD)),
    ]


def config_overrides(info: dict, num_classes: Optional[int] = None) -> List[Tuple[str, object]]:
    """detectron2 config (key, value) pairs for the architecture ``info`` (from ``analyze_mmdet_state_dict``);
    ``num_classes`` replaces the checkpoint's class count."""
    ov: List[Tuple[str, object]] = []
    if info.get("depth"):
        ov.append(("MODEL.BACKBONE.NAME",
                   "build_cardd_resnet_fpn_backbone" if info["has_neck"] else "build_cardd_resnet_backbone"))
        ov.append(("MODEL.RESNETS.DEPTH", info["depth"]))
        ov.extend(mmdet_style_overrides())
        ov.append(("MODEL.RESNETS.DEFORM_ON_PER_STAGE", info["deform_on_per_stage"]))
        if any(info["deform_on_per_stage"]):
            ov.append(("MODEL.RESNETS.DEFORM_MODULATED", info["deform_modulated"]))
            ov.append(("MODEL.RESNETS.DEFORM_NUM_GROUPS", info["deform_num_groups"]))
        ov.append(("MODEL.RESNETS.GC_ON_PER_STAGE", info["gc_on_per_stage"]))
        if any(info["gc_on_per_stage"]):
            ov.append(("MODEL.RESNETS.GC_RATIO", info["gc_ratio"]))
    k = num_classes if num_classes is not None else info.get("num_classes")
    if k is not None:
        ov.append(("MODEL.ROI_HEADS.NUM_CLASSES", k))
    if info.get("heads"):
        name = HEAD_FAMILIES[info["heads"]].roi_heads_name
        if name is not None:
            ov.append(("MODEL.ROI_HEADS.NAME", name))
    facts = info.get("roi_heads", {})
    ov.extend((key, facts[fact]) for fact, key in _HEAD_FACT_KEYS if facts.get(fact) is not None)
    return ov
