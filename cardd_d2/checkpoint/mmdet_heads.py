"""mmdetection 2.x -> detectron2 rules of the ROI heads, one plain table per head family, and what the heads'
tensors say about the model (class count, class-agnostic layers, mask branch).

Mask R-CNN (``StandardROIHeads`` / ``CarDDStandardROIHeads``):

====================================================  ====================================================
``roi_head.bbox_head.shared_fcs.0`` / ``.1``          ``roi_heads.box_head.fc1`` / ``fc2``
``roi_head.bbox_head.fc_cls`` / ``fc_reg``            ``roi_heads.box_predictor.cls_score`` / ``bbox_pred``
``roi_head.mask_head.convs.i.conv``                   ``roi_heads.mask_head.mask_fcn{i+1}``
``roi_head.mask_head.upsample`` / ``conv_logits``     ``roi_heads.mask_head.deconv`` / ``predictor``
====================================================  ====================================================

Cascade Mask R-CNN (``MMDetCascadeROIHeads``) and HTC (``HTCROIHeads``): the same per stage ``t``, i.e.
``roi_head.bbox_head.{t}.*`` -> ``roi_heads.box_head.{t}.*`` / ``roi_heads.box_predictor.{t}.*`` and
``roi_head.mask_head.{t}.*`` -> ``roi_heads.mask_head.{t}.*``; HTC adds the mask information flow
``roi_head.mask_head.{t}.conv_res.conv`` -> ``roi_heads.mask_head.{t}.conv_res`` and the semantic head
(``FusedSemanticHead``, ConvModules without norm) ``roi_head.semantic_head.{lateral_convs.i,convs.i,conv_embedding}
.conv`` -> ``roi_heads.semantic_head.{same}`` and ``conv_logits`` -> ``conv_logits`` (its rows are stuff classes,
not the detector's, so it is no predictor). ``HTCROIHeads`` without the semantic branch drops these on load.

Layouts need no re-ordering: mmdet 2.x ``BBoxHead`` has ``num_classes + 1`` outputs with background last, as
detectron2's ``FastRCNNOutputLayers``; box regression is class-major ``(dx, dy, dw, dh)`` per class (or 4 values
class-agnostic) in both, and mmdet's target stds are the reciprocals of ``BBOX_REG_WEIGHTS``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .mmdet_rules import Rule, shifted
from .mmdet_state_dict import MmdetConversionError

__all__ = ["HeadFamily", "HEAD_FAMILIES", "detect_heads", "read_head_facts"]


@dataclass(frozen=True)
class HeadFamily:
    """One family of ROI heads.

    rules: key rules of the head parameters.
    predictors: regexes of the keys whose shape depends on the detector's class count (``drop_heads``).
    signature: regex that every ROI-head key of such a checkpoint matches (see :func:`detect_heads`).
    stage: regex of the stage index between ``bbox_head.`` / ``mask_head.`` and the layer ("" for one stage).
    roi_heads_name: detectron2 ``MODEL.ROI_HEADS.NAME`` these weights need (None: the config's choice).
    class_agnostic_boxes: the heads only exist with class-agnostic regression (the cascades).
    """

    name: str
    rules: Tuple[Rule, ...]
    predictors: Tuple[str, ...]
    signature: str
    stage: str = ""
    roi_heads_name: Optional[str] = None
    class_agnostic_boxes: bool = False


_W = r"(?P<x>weight|bias)"
_B, _M = r"roi_head\.bbox_head\.", r"roi_head\.mask_head\."

MASK_RCNN = HeadFamily(
    name="mask_rcnn",
    rules=(
        Rule(_B + rf"shared_fcs\.(?P<i>[01])\.{_W}", shifted("i", 1, "roi_heads.box_head.fc{n}.{x}")),
        Rule(_B + rf"fc_cls\.{_W}", r"roi_heads.box_predictor.cls_score.\g<x>"),
        Rule(_B + rf"fc_reg\.{_W}", r"roi_heads.box_predictor.bbox_pred.\g<x>"),
        Rule(_M + rf"convs\.(?P<i>\d+)\.conv\.{_W}", shifted("i", 1, "roi_heads.mask_head.mask_fcn{n}.{x}")),
        Rule(_M + rf"upsample\.{_W}", r"roi_heads.mask_head.deconv.\g<x>"),
        Rule(_M + rf"conv_logits\.{_W}", r"roi_heads.mask_head.predictor.\g<x>"),
    ),
    predictors=(_B + r"fc_cls\..*", _B + r"fc_reg\..*", _M + r"conv_logits\..*"),
    signature=r"roi_head\.(bbox|mask)_head\.(shared_fcs|fc_cls|fc_reg|convs|upsample|conv_logits)\..*",
)

_T = r"(?P<t>\d+)\."
_STAGE_RULES = (
    Rule(_B + _T + rf"shared_fcs\.(?P<i>[01])\.{_W}", shifted("i", 1, "roi_heads.box_head.{t}.fc{n}.{x}")),
    Rule(_B + _T + rf"fc_cls\.{_W}", r"roi_heads.box_predictor.\g<t>.cls_score.\g<x>"),
    Rule(_B + _T + rf"fc_reg\.{_W}", r"roi_heads.box_predictor.\g<t>.bbox_pred.\g<x>"),
    Rule(_M + _T + rf"convs\.(?P<i>\d+)\.conv\.{_W}", shifted("i", 1, "roi_heads.mask_head.{t}.mask_fcn{n}.{x}")),
    Rule(_M + _T + rf"upsample\.{_W}", r"roi_heads.mask_head.\g<t>.deconv.\g<x>"),
    Rule(_M + _T + rf"conv_logits\.{_W}", r"roi_heads.mask_head.\g<t>.predictor.\g<x>"),
)
_STAGE_PREDICTORS = (_B + r"\d+\.fc_(cls|reg)\..*", _M + r"\d+\.conv_logits\..*")
_STAGE_KEYS = (r"bbox_head\.\d+\.(shared_fcs\.[01]|fc_cls|fc_reg)"
               r"|mask_head\.\d+\.(convs\.\d+\.conv|upsample|conv_logits)")

CASCADE_MASK_RCNN = HeadFamily(
    name="cascade_mask_rcnn",
    rules=_STAGE_RULES,
    predictors=_STAGE_PREDICTORS,
    signature=rf"roi_head\.({_STAGE_KEYS})\.(weight|bias)",
    stage=r"\d+\.",
    roi_heads_name="MMDetCascadeROIHeads",
    class_agnostic_boxes=True,
)

_S = r"roi_head\.semantic_head\."
HTC = HeadFamily(
    name="htc",
    rules=_STAGE_RULES + (
        Rule(_M + _T + rf"conv_res\.conv\.{_W}", r"roi_heads.mask_head.\g<t>.conv_res.\g<x>"),
        Rule(_S + rf"(?P<m>(lateral_convs|convs)\.\d+|conv_embedding)\.conv\.{_W}",
             r"roi_heads.semantic_head.\g<m>.\g<x>"),
        Rule(_S + rf"conv_logits\.{_W}", r"roi_heads.semantic_head.conv_logits.\g<x>"),
    ),
    predictors=_STAGE_PREDICTORS,
    signature=rf"roi_head\.({_STAGE_KEYS}|mask_head\.\d+\.conv_res\.conv|semantic_head\..+)\.(weight|bias)",
    stage=r"\d+\.",
    roi_heads_name="HTCROIHeads",
    class_agnostic_boxes=True,
)

# In detection order: a checkpoint whose ROI keys all fit the cascade signature is a cascade; conv_res and
# semantic-head keys fit only HTC's.
HEAD_FAMILIES: "OrderedDict[str, HeadFamily]" = OrderedDict((f.name, f) for f in (MASK_RCNN, CASCADE_MASK_RCNN, HTC))


def detect_heads(sd: dict) -> Optional[str]:
    """Name of the head family whose signature the checkpoint's ROI-head keys match (None: no ROI heads).

    The first family matching every ROI key wins, else the first matching any (the keys it cannot map are then
    reported by the conversion)."""
    roi_keys = [k for k in sd if k.startswith("roi_head.")]
    if not roi_keys:
        return None
    for test in (all, any):
        for name, family in HEAD_FAMILIES.items():
            if test(re.fullmatch(family.signature, k) for k in roi_keys):
                return name
    raise MmdetConversionError(
        f"no head mapping matches the checkpoint's ROI-head keys (e.g. {roi_keys[:3]}); known families: "
        f"{list(HEAD_FAMILIES)}"
    )


def _rows(sd: dict, family: HeadFamily, head: str, layer: str) -> Dict[str, int]:
    """Output rows of ``roi_head.<head>.[<stage>.]<layer>.weight`` per stage key ("" for one stage)."""
    pattern = rf"roi_head\.{head}\.(?P<t>{family.stage}){layer}\.weight"
    found = {m.group("t"): v.shape[0] for k, v in sd.items() for m in [re.fullmatch(pattern, k)] if m}
    return dict(sorted(found.items()))


def read_head_facts(sd: dict, family: HeadFamily) -> dict:
    """What the ROI-head tensors say: ``num_classes`` (None if no predictor), ``cls_agnostic_bbox_reg``,
    ``cls_agnostic_mask``, ``mask_on`` and, for HTC, ``mask_info_flow``. Stages must agree with each other."""
    def stage_name(t):  # t is "" (one stage) or "<index>."
        return f"roi_head.{{}}.{t}"

    cls = _rows(sd, family, "bbox_head", "fc_cls")
    reg = _rows(sd, family, "bbox_head", "fc_reg")
    logits = _rows(sd, family, "mask_head", "conv_logits")
    if family.stage:
        box_stages = {k.split(".")[2] for k in sd if re.match(r"roi_head\.bbox_head\.\d+\.", k)}
        mask_stages = {k.split(".")[2] for k in sd if re.match(r"roi_head\.mask_head\.\d+\.", k)}
        if box_stages and mask_stages and box_stages != mask_stages:
            raise MmdetConversionError(
                f"box heads for stages {sorted(box_stages, key=int)} but mask heads for stages "
                f"{sorted(mask_stages, key=int)}"
            )

    k = None
    for t, rows in cls.items():
        if k is not None and rows - 1 != k:
            raise MmdetConversionError(
                f"{stage_name(t).format('bbox_head')}fc_cls.weight has {rows - 1} classes, an earlier stage {k}"
            )
        k = rows - 1  # + background, the last column
    agnostic_box = None
    for t, rows in reg.items():
        name = f"{stage_name(t).format('bbox_head')}fc_reg.weight"
        if rows == 4:
            agnostic_box = True
        elif family.class_agnostic_boxes:
            raise MmdetConversionError(
                f"{name} has {rows} rows; the cascade heads need class-agnostic regression (4 rows)"
            )
        elif k is not None and rows != 4 * k:
            raise MmdetConversionError(f"{name} has {rows} rows; expected 4 or 4 * {k} classes")
        else:
            k = rows // 4 if k is None else k
    agnostic_mask = None
    for t, rows in logits.items():
        if rows == 1 and k != 1:
            agnostic_mask = True
        elif k is not None and rows != k:
            raise MmdetConversionError(
                f"{stage_name(t).format('mask_head')}conv_logits.weight has {rows} classes but the box classifier "
                f"has {k}"
            )
        elif k is None:
            k = rows
    facts = {
        "num_classes": k,
        "cls_agnostic_bbox_reg": agnostic_box,
        "cls_agnostic_mask": agnostic_mask,
        # a checkpoint with box predictors and no mask head is a Faster R-CNN
        "mask_on": False if (cls or reg) and not any(key.startswith("roi_head.mask_head.") for key in sd) else None,
    }
    if family is HTC:
        facts["mask_info_flow"] = any(re.match(r"roi_head\.mask_head\.\d+\.conv_res\.", key) for key in sd)
    return facts
