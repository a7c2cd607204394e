"""Convert mmdetection 2.x checkpoints (Mask R-CNN, Cascade Mask R-CNN, HTC; R-50/101 FPN, +DCN, +GCNet) to
detectron2 checkpoints.

The result is a ``.pth`` dict ``{"model": state_dict, "__author__": "cardd-convert-mmdet",
"matching_heuristics": False}`` that ``DetectionCheckpointer`` loads key-for-key into a cardd model built with
the config overrides in ``ConversionResult.overrides``. The steps live apart:

* reading the file: :mod:`.mmdet_state_dict`;
* what the tensors hold (depth, DCN / GC stages, head family, classes): :mod:`.mmdet_analysis`;
* renaming, one rule table per part: :mod:`.mmdet_rules` (backbone, neck, RPN), :mod:`.mmdet_heads` (ROI heads);
* the config values the weights need: :mod:`.mmdet_overrides`.

Anchors (sizes 8 x strides = 32..512, ratios 0.5/1/2, centre offset 0) and ROI pooling (mmdet ``RoIAlign``
aligned, ``finest_scale`` 56 = detectron2 ``ROIAlignV2`` with its canonical level 4 at 224) are detectron2's
defaults; mmdet 2.x boxes decode without the legacy "+1", like detectron2.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from cardd_sod.fileio import atomic_torch_save

from .mmdet_analysis import analyze_mmdet_state_dict
from .mmdet_heads import HEAD_FAMILIES
from .mmdet_overrides import config_overrides
from .mmdet_rules import NECK_RULES, RPN_RULES, backbone_rules
from .mmdet_state_dict import AUTHOR, MmdetConversionError, extract_state_dict, load_mmdet_state_dict

__all__ = ["ConversionResult", "convert_mmdet_state_dict", "convert_mmdet_checkpoint"]


@dataclass
class ConversionResult:
    model: "OrderedDict[str, torch.Tensor]"
    info: dict
    overrides: List[Tuple[str, object]]
    dropped: List[str]
    mapping: Dict[str, str]

    def checkpoint(self) -> dict:
        return {"model": self.model, "__author__": AUTHOR, "matching_heuristics": False}

    def overrides_as_opts(self) -> List[str]:
        """["KEY", "VALUE", ...] for detectron2's ``cfg.merge_from_list`` / command-line opts."""
        out: List[str] = []
        for k, v in self.overrides:
            out += [k, str(tuple(v)) if isinstance(v, list) else str(v)]
        return out


def convert_mmdet_state_dict(
    sd: dict,
    *,
    num_classes: Optional[int] = None,
    drop_heads: bool = False,
    heads: Optional[str] = None,
    ignore: Sequence[str] = (),
    deform_modulated: Optional[bool] = None,
    deform_num_groups: Optional[int] = None,
    source: str = "<checkpoint>",
) -> ConversionResult:
    """Rename an mmdet 2.x state dict to detectron2 names.

    num_classes: the class count the target config uses; a mismatch with the checkpoint's predictors is an
        error unless ``drop_heads`` is set.
    drop_heads: drop the class-specific predictor layers (box classifier, box regressor, mask logits), e.g.
        to fine-tune COCO weights (80 classes) on CarDD (6 classes).
    heads: a head family of ``HEAD_FAMILIES``; default: detected.
    ignore: regexes of mmdet keys to drop knowingly.
    """
    sd = extract_state_dict(sd, source=source)
    info = analyze_mmdet_state_dict(
        sd, deform_modulated=deform_modulated, deform_num_groups=deform_num_groups, heads=heads, source=source
    )
    family = HEAD_FAMILIES[info["heads"]] if info["heads"] else None

    dropped: List[str] = []
    ckpt_k = info["num_classes"]
    mismatch = num_classes is not None and ckpt_k is not None and num_classes != ckpt_k
    if family is not None and not drop_heads and mismatch:
        raise MmdetConversionError(
            f"{source}: the checkpoint's heads predict {ckpt_k} classes (+ background) but num_classes is "
            f"{num_classes}; pass drop_heads / --drop-heads to drop the class-specific predictor layers "
            "and train them from scratch"
        )
    if family is not None and drop_heads:
        dropped = [k for k in sd if any(re.fullmatch(p, k) for p in family.predictors)]
        # the class count and class-agnostic flags no longer come from the file
        facts = dict(info["roi_heads"], num_classes=None, cls_agnostic_bbox_reg=None, cls_agnostic_mask=None)
        info = dict(info, num_classes=None, roi_heads=facts)

    prefix = "backbone.bottom_up." if info["has_neck"] else "backbone."
    rules = backbone_rules(prefix) + NECK_RULES + RPN_RULES + list(family.rules if family else ())

    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    mapping: Dict[str, str] = {}
    unknown: List[str] = []
    for key, value in sd.items():
        if key.endswith(".num_batches_tracked") or key in dropped or any(re.fullmatch(p, key) for p in ignore):
            continue
        new = next((n for n in (rule.apply(key) for rule in rules) if n is not None), None)
        if new is None:
            unknown.append(key)
            continue
        if new in out:
            raise MmdetConversionError(f"{source}: two keys map to {new} (second: {key})")
        out[new] = value.detach().clone().contiguous()
        mapping[key] = new
    if unknown:
        shown = "\n  ".join(unknown[:50]) + ("\n  ..." if len(unknown) > 50 else "")
        raise MmdetConversionError(
            f"{source}: {len(unknown)} mmdet key(s) have no detectron2 mapping (supported: Mask R-CNN, Cascade "
            f"Mask R-CNN and HTC, R-50/101 FPN with DCN/DCNv2/GCNet; use ignore= / --ignore REGEX to drop keys "
            f"knowingly):\n  {shown}"
        )
    return ConversionResult(
        model=out, info=info, overrides=config_overrides(info, num_classes), dropped=dropped, mapping=mapping
    )


def convert_mmdet_checkpoint(src: str, dst: str, *, trust_pickle: bool = False, **kwargs) -> ConversionResult:
    """Read ``src`` (mmdet .pth), convert, write ``dst`` (detectron2 .pth). kwargs: see convert_mmdet_state_dict."""
    sd = load_mmdet_state_dict(src, trust_pickle=trust_pickle)
    result = convert_mmdet_state_dict(sd, source=src, **kwargs)
    atomic_torch_save(result.checkpoint(), dst)
    return result
