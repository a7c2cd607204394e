"""mmdet 2.x -> detectron2 key mapping of the Cascade Mask R-CNN and HTC ROI heads, registered with the converter
(:mod:`cardd_d2.checkpoint.mmdet_convert`) on import.

====================================================  ======================================================
mmdet (``CascadeRoIHead`` / ``HybridTaskCascadeRoIHead``)  detectron2 (:class:`MMDetCascadeROIHeads` / :class:`HTCROIHeads`)
====================================================  ======================================================
``roi_head.bbox_head.{t}.shared_fcs.0`` / ``.1``      ``roi_heads.box_head.{t}.fc1`` / ``fc2``
``roi_head.bbox_head.{t}.fc_cls`` / ``fc_reg``        ``roi_heads.box_predictor.{t}.cls_score`` / ``bbox_pred``
``roi_head.mask_head.{t}.convs.{i}.conv``             ``roi_heads.mask_head.{t}.mask_fcn{i+1}``
``roi_head.mask_head.{t}.upsample`` / ``conv_logits``  ``roi_heads.mask_head.{t}.deconv`` / ``predictor``
``roi_head.mask_head.{t}.conv_res.conv`` (HTC)        ``roi_heads.mask_head.{t}.conv_res``
``roi_head.semantic_head.lateral_convs.{i}.conv``     ``roi_heads.semantic_head.lateral_convs.{i}`` (HTC)
``roi_head.semantic_head.convs.{i}.conv``             ``roi_heads.semantic_head.convs.{i}``
``roi_head.semantic_head.conv_embedding.conv``        ``roi_heads.semantic_head.conv_embedding``
``roi_head.semantic_head.conv_logits``                ``roi_heads.semantic_head.conv_logits``
====================================================  ======================================================

Layouts are the same as in the Mask R-CNN mapping (classifier K+1 with background last, class-agnostic
regression of 4 values, class-specific mask logits). The ROI extractors have no parameters. HTC's semantic head
(``FusedSemanticHead`` without norm layers; lateral convs in P2..P6 order, as ``MODEL.HTC.SEMANTIC_IN_FEATURES``)
maps onto :class:`~cardd_d2.modeling.roi_heads.htc_semantic.FusedSemanticHead`; load such weights with
``configs/CarDD/htc_semantic_R_50_FPN.yaml`` (``MODEL.HTC.SEMANTIC_NUM_CLASSES`` = rows of ``conv_logits``, 183 for
COCO-stuff). The converter emits no semantic config overrides (it cannot tell whether the keys are kept): to use the
weights without the semantic branch (CarDD), drop them with ``ignore=[r"roi_head\\.semantic_head\\..*"]``
(``--ignore``) or use mmdet's ``htc_without_semantic`` weights. ``drop_heads`` keeps ``conv_logits`` (stuff classes,
not the detector's classes).

Detection: a checkpoint whose ROI keys are all per-stage box / mask keys is "cascade_mask_rcnn"; one that also
has ``conv_res`` (mask information flow) or a semantic head is "htc".
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

from cardd_d2.checkpoint.mmdet_convert import (
    HEAD_RULE_SETS,
    HeadRules,
    MmdetConversionError,
    Rule,
    register_head_rules,
)

__all__ = ["cascade_head_rules", "htc_head_rules", "CASCADE_HEADS", "HTC_HEADS"]

CASCADE_HEADS = "cascade_mask_rcnn"
HTC_HEADS = "htc"

_STAGE_KEYS = (
    r"roi_head\.(bbox_head\.\d+\.(shared_fcs\.[01]|fc_cls|fc_reg)"
    r"|mask_head\.\d+\.(convs\.\d+\.conv|upsample|conv_logits)"
)


def _stage_rules() -> List[Rule]:
    def fc(m):
        return f"roi_heads.box_head.{m.group('t')}.fc{int(m.group('i')) + 1}.{m.group('x')}"

    def fcn(m):
        return f"roi_heads.mask_head.{m.group('t')}.mask_fcn{int(m.group('i')) + 1}.{m.group('x')}"

    return [
        Rule(r"roi_head\.bbox_head\.(?P<t>\d+)\.shared_fcs\.(?P<i>[01])\.(?P<x>weight|bias)", fc),
        Rule(r"roi_head\.bbox_head\.(?P<t>\d+)\.fc_cls\.(?P<x>weight|bias)",
             r"roi_heads.box_predictor.\g<t>.cls_score.\g<x>"),
        Rule(r"roi_head\.bbox_head\.(?P<t>\d+)\.fc_reg\.(?P<x>weight|bias)",
             r"roi_heads.box_predictor.\g<t>.bbox_pred.\g<x>"),
        Rule(r"roi_head\.mask_head\.(?P<t>\d+)\.convs\.(?P<i>\d+)\.conv\.(?P<x>weight|bias)", fcn),
        Rule(r"roi_head\.mask_head\.(?P<t>\d+)\.upsample\.(?P<x>weight|bias)",
             r"roi_heads.mask_head.\g<t>.deconv.\g<x>"),
        Rule(r"roi_head\.mask_head\.(?P<t>\d+)\.conv_logits\.(?P<x>weight|bias)",
             r"roi_heads.mask_head.\g<t>.predictor.\g<x>"),
    ]


def _stages(sd, head: str) -> List[int]:
    return sorted({int(m.group(1)) for k in sd for m in [re.match(rf"roi_head\.{head}\.(\d+)\.", k)] if m})


def _num_classes_fn(roi_heads_name: str, htc: bool):
    def read(sd) -> Tuple[Optional[int], List[Tuple[str, object]]]:
        overrides: List[Tuple[str, object]] = [("MODEL.ROI_HEADS.NAME", roi_heads_name)]
        box_stages, mask_stages = _stages(sd, "bbox_head"), _stages(sd, "mask_head")
        if mask_stages and box_stages and mask_stages != box_stages:
            raise MmdetConversionError(f"box heads for stages {box_stages} but mask heads for stages {mask_stages}")
        k = None
        for t in box_stages:
            cls = sd.get(f"roi_head.bbox_head.{t}.fc_cls.weight")
            reg = sd.get(f"roi_head.bbox_head.{t}.fc_reg.weight")
            if cls is not None:
                if k is not None and cls.shape[0] - 1 != k:
                    raise MmdetConversionError(f"stage {t} classifier has {cls.shape[0] - 1} classes, stage 0 {k}")
                k = cls.shape[0] - 1
            if reg is not None and reg.shape[0] != 4:
                raise MmdetConversionError(
                    f"roi_head.bbox_head.{t}.fc_reg.weight has {reg.shape[0]} rows; the cascade heads need "
                    "class-agnostic regression (4 rows)"
                )
        for t in mask_stages:
            logits = sd.get(f"roi_head.mask_head.{t}.conv_logits.weight")
            if logits is None:
                continue
            if logits.shape[0] == 1 and k != 1:
                overrides.append(("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True))
            elif k is not None and logits.shape[0] != k:
                raise MmdetConversionError(
                    f"roi_head.mask_head.{t}.conv_logits.weight has {logits.shape[0]} classes but the box "
                    f"classifier has {k}"
                )
            elif k is None:
                k = logits.shape[0]
        if not mask_stages:
            overrides.append(("MODEL.MASK_ON", False))
        if htc:
            with_flow = any(re.match(r"roi_head\.mask_head\.\d+\.conv_res\.", key) for key in sd)
            overrides.append(("MODEL.HTC.MASK_INFO_FLOW", with_flow))
        # dict.fromkeys keeps order and removes duplicates (CLS_AGNOSTIC_MASK once per stage)
        return k, list(dict.fromkeys(overrides))

    return read


_PREDICTORS = [r"roi_head\.bbox_head\.\d+\.fc_(cls|reg)\..*", r"roi_head\.mask_head\.\d+\.conv_logits\..*"]


def cascade_head_rules() -> HeadRules:
    return HeadRules(
        rules=_stage_rules(),
        predictors=list(_PREDICTORS),
        num_classes=_num_classes_fn("MMDetCascadeROIHeads", htc=False),
        signature=_STAGE_KEYS + r")\.(weight|bias)",
    )


def _semantic_rules() -> List[Rule]:
    """mmdet FusedSemanticHead (ConvModules without norm: ``<name>.conv``) -> HTCROIHeads.semantic_head."""
    src, dst = r"roi_head\.semantic_head\.", "roi_heads.semantic_head."
    return [
        Rule(src + r"(?P<m>(lateral_convs|convs)\.\d+|conv_embedding)\.conv\.(?P<x>weight|bias)",
             dst + r"\g<m>.\g<x>"),
        Rule(src + r"conv_logits\.(?P<x>weight|bias)", dst + r"conv_logits.\g<x>"),
    ]


def htc_head_rules() -> HeadRules:
    return HeadRules(
        rules=_stage_rules()
        + [Rule(r"roi_head\.mask_head\.(?P<t>\d+)\.conv_res\.conv\.(?P<x>weight|bias)",
                r"roi_heads.mask_head.\g<t>.conv_res.\g<x>")]
        + _semantic_rules(),
        predictors=list(_PREDICTORS),
        num_classes=_num_classes_fn("HTCROIHeads", htc=True),
        signature=_STAGE_KEYS + r"|mask_head\.\d+\.conv_res\.conv|semantic_head\..+)\.(weight|bias)",
    )


# Registration order matters for detection: a checkpoint whose keys all fit the cascade signature is a cascade;
# conv_res / semantic-head keys only fit HTC's.
for _name, _make in ((CASCADE_HEADS, cascade_head_rules), (HTC_HEADS, htc_head_rules)):
    if _name not in HEAD_RULE_SETS:
        register_head_rules(_name, _make())
