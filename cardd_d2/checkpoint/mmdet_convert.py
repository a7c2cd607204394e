"""Convert mmdetection 2.x Mask R-CNN checkpoints (R-50/R-101 FPN, +DCN, +GCNet) to detectron2 checkpoints.

The result is a ``.pth`` dict ``{"model": state_dict, "__author__": "cardd-convert-mmdet",
"matching_heuristics": False}`` that ``DetectionCheckpointer`` loads key-for-key (no heuristic matching) into
a cardd model built with the config overrides returned in ``ConversionResult.overrides``.

Key mapping (mmdet -> detectron2), FPN models (the ResNet lives under ``backbone.bottom_up``):

====================================================  ====================================================
``backbone.conv1`` / ``backbone.bn1``                 ``backbone.bottom_up.stem.conv1`` / ``...conv1.norm``
``backbone.layerN.M.convK`` / ``.bnK``                ``backbone.bottom_up.res{N+1}.M.convK`` / ``.convK.norm``
``backbone.layerN.M.downsample.0`` / ``.1``           ``...res{N+1}.M.shortcut`` / ``.shortcut.norm``
``backbone.layerN.M.conv2.conv_offset``               ``...res{N+1}.M.conv2_offset``        (DCN / DCNv2)
``backbone.layerN.M.context_block.*``                 ``...res{N+1}.M.context_block.*``     (GCNet)
``neck.lateral_convs.i.conv`` / ``neck.fpn_convs.i``  ``backbone.fpn_lateral{i+2}`` / ``backbone.fpn_output{i+2}``
``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg``     ``proposal_generator.rpn_head.conv`` / ``objectness_logits``
                                                      / ``anchor_deltas``
``roi_head.bbox_head.shared_fcs.0`` / ``.1``          ``roi_heads.box_head.fc1`` / ``fc2``
``roi_head.bbox_head.fc_cls`` / ``fc_reg``            ``roi_heads.box_predictor.cls_score`` / ``bbox_pred``
``roi_head.mask_head.convs.i.conv``                   ``roi_heads.mask_head.mask_fcn{i+1}``
``roi_head.mask_head.upsample`` / ``conv_logits``     ``roi_heads.mask_head.deconv`` / ``predictor``
====================================================  ====================================================

BatchNorm ``weight/bias/running_mean/running_var`` become detectron2 ``FrozenBatchNorm2d`` buffers of the same
names; ``num_batches_tracked`` is dropped.  No tensor needs re-ordering:

* classifier: mmdet 2.x ``BBoxHead`` has ``num_classes + 1`` outputs and labels background as ``num_classes``
  (its last column; "0~num_classes-1 are FG, num_classes is BG" in mmdet/models/roi_heads/bbox_heads/
  bbox_head.py), exactly detectron2's ``FastRCNNOutputLayers`` layout;
* box regression: both use class-major ``(dx, dy, dw, dh)`` blocks of 4 per foreground class; mmdet's target
  stds (0.1, 0.1, 0.2, 0.2) are detectron2's ``ROI_BOX_HEAD.BBOX_REG_WEIGHTS`` (10, 10, 5, 5) (the default); the
  RPN's stds (1, 1, 1, 1) are ``RPN.BBOX_REG_WEIGHTS`` (1, 1, 1, 1) (the default).  mmdet 2.x boxes use no "+1"
  in widths (the non-legacy ``DeltaXYWHBBoxCoder``), like detectron2;
* RPN: mmdet's sigmoid objectness has one channel per anchor (3 anchors, ratios 0.5/1/2, one size per level,
  anchor-major channels), like detectron2's ``StandardRPNHead``; anchor sizes 8 * strides = 32..512 with
  centre offset 0 are detectron2's defaults;
* ROI pooling: mmdet's ``RoIAlign(aligned=True, sampling_ratio=0)`` with ``finest_scale=56`` equals detectron2's
  ``ROIAlignV2`` with its canonical 224/level-4 level assignment (the defaults);
* DCN: mmcv's ``conv_offset`` has the same (dy, dx)-interleaved layout; for DCNv2 the first 2/3 channels are
  offsets and the last 1/3 the mask logits in both.

What a user must set (``ConversionResult.overrides`` lists them; ``tools/convert_mmdet_to_d2.py`` prints them):
mmdet's ResNets are "pytorch" style, so ``MODEL.RESNETS.STRIDE_IN_1X1 False``; inputs are RGB normalised with
mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375): ``INPUT.FORMAT RGB``, ``MODEL.PIXEL_MEAN`` and
``MODEL.PIXEL_STD`` accordingly; the depth, DCN stages / modulation / groups and GC stages / ratio detected in
the checkpoint; ``MODEL.BACKBONE.NAME build_cardd_resnet_fpn_backbone``; and the number of classes.
One training difference remains by design: mmdet trains BN affine parameters with frozen statistics
(``norm_eval``), detectron2's ``FrozenBN`` freezes both; inference is identical.

Extending to other heads (Cascade, HTC): register a :class:`HeadRules` with :func:`register_head_rules`; the
converter picks a head set by name (``heads=``) or by :func:`detect_heads`.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "MmdetConversionError",
    "Rule",
    "HeadRules",
    "HEAD_RULE_SETS",
    "register_head_rules",
    "backbone_rules",
    "neck_rules",
    "rpn_rules",
    "detect_heads",
    "config_overrides",
    "mmdet_style_overrides",
    "load_mmdet_state_dict",
    "analyze_mmdet_state_dict",
    "convert_mmdet_state_dict",
    "convert_mmdet_checkpoint",
    "ConversionResult",
    "AUTHOR",
    "MMDET_PIXEL_MEAN",
    "MMDET_PIXEL_STD",
]

AUTHOR = "cardd-convert-mmdet"
MMDET_PIXEL_MEAN = (123.675, 116.28, 103.53)
MMDET_PIXEL_STD = (58.395, 57.12, 57.375)
_BN_PARAMS = "weight|bias|running_mean|running_var"
_DEPTH_BY_BLOCKS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


class MmdetConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file (when known) and the problem."""


Target = Union[str, Callable[["re.Match"], str]]


@dataclass
class Rule:
    """``pattern`` is matched in full against an mmdet key; ``target`` is a ``re.Match.expand`` template or a
    function of the match returning the detectron2 key."""

    pattern: str
    target: Target

    def __post_init__(self):
        self._re = re.compile(self.pattern)

    def apply(self, key: str) -> Optional[str]:
        m = self._re.fullmatch(key)
        if m is None:
            return None
        return self.target(m) if callable(self.target) else m.expand(self.target)


@dataclass
class HeadRules:
    """Mapping of one family of ROI heads.

    rules: key rules for the head parameters.
    predictors: regexes of the mmdet keys whose shape depends on the number of classes (dropped by
        ``drop_heads``).
    num_classes: function(state_dict) -> (num_classes or None, dict of extra config overrides) read from the
        predictor shapes.
    signature: regex; a checkpoint with a key matching it uses this head set (see :func:`detect_heads`).
    """

    rules: List[Rule]
    predictors: List[str] = field(default_factory=list)
    num_classes: Optional[Callable[[dict], Tuple[Optional[int], List[Tuple[str, object]]]]] = None
    signature: Optional[str] = None


def backbone_rules(dst_prefix: str) -> List[Rule]:
    """ResNet rules; ``dst_prefix`` is ``backbone.bottom_up.`` (FPN models) or ``backbone.`` (no neck)."""
    p = dst_prefix

    def stage(m):
        return f"{p}res{int(m.group('n')) + 1}.{m.group('m')}"

    return [
        Rule(r"backbone\.conv1\.weight", p + "stem.conv1.weight"),
        Rule(rf"backbone\.bn1\.(?P<x>{_BN_PARAMS})", p + r"stem.conv1.norm.\g<x>"),
        Rule(r"backbone\.layer(?P<n>[1-4])\.(?P<m>\d+)\.conv(?P<k>[123])\.weight",
             lambda m: f"{stage(m)}.conv{m.group('k')}.weight"),
        Rule(rf"backbone\.layer(?P<n>[1-4])\.(?P<m>\d+)\.bn(?P<k>[123])\.(?P<x>{_BN_PARAMS})",
             lambda m: f"{stage(m)}.conv{m.group('k')}.norm.{m.group('x')}"),
        Rule(r"backbone\.layer(?P<n>[1-4])\.(?P<m>\d+)\.downsample\.0\.weight",
             lambda m: f"{stage(m)}.shortcut.weight"),
        Rule(rf"backbone\.layer(?P<n>[1-4])\.(?P<m>\d+)\.downsample\.1\.(?P<x>{_BN_PARAMS})",
             lambda m: f"{stage(m)}.shortcut.norm.{m.group('x')}"),
        Rule(r"backbone\.layer(?P<n>[1-4])\.(?P<m>\d+)\.conv2\.conv_offset\.(?P<x>weight|bias)",
             lambda m: f"{stage(m)}.conv2_offset.{m.group('x')}"),
        Rule(r"backbone\.layer(?P<n>[1-4])\.(?P<m>\d+)\.context_block\.(?P<x>conv_mask\.(weight|bias)"
             r"|channel_add_conv\.[013]\.(weight|bias))",
             lambda m: f"{stage(m)}.context_block.{m.group('x')}"),
    ]


def neck_rules() -> List[Rule]:
    return [
        Rule(r"neck\.lateral_convs\.(?P<i>[0-3])\.conv\.(?P<x>weight|bias)",
             lambda m: f"backbone.fpn_lateral{int(m.group('i')) + 2}.{m.group('x')}"),
        Rule(r"neck\.fpn_convs\.(?P<i>[0-3])\.conv\.(?P<x>weight|bias)",
             lambda m: f"backbone.fpn_output{int(m.group('i')) + 2}.{m.group('x')}"),
    ]


def rpn_rules() -> List[Rule]:
    d = "proposal_generator.rpn_head."
    return [
        Rule(r"rpn_head\.rpn_conv\.(?P<x>weight|bias)", d + r"conv.\g<x>"),
        Rule(r"rpn_head\.rpn_cls\.(?P<x>weight|bias)", d + r"objectness_logits.\g<x>"),
        Rule(r"rpn_head\.rpn_reg\.(?P<x>weight|bias)", d + r"anchor_deltas.\g<x>"),
    ]


def _mask_rcnn_num_classes(sd):
    overrides = []
    k = None
    cls = sd.get("roi_head.bbox_head.fc_cls.weight")
    if cls is not None:
        k = cls.shape[0] - 1  # + background, last column
    reg = sd.get("roi_head.bbox_head.fc_reg.weight")
    if reg is not None:
        if reg.shape[0] == 4:
            overrides.append(("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True))
        elif k is not None and reg.shape[0] != 4 * k:
            raise MmdetConversionError(
                f"roi_head.bbox_head.fc_reg.weight has {reg.shape[0]} rows; expected 4 or 4 * {k} classes"
            )
        elif k is None:
            k = reg.shape[0] // 4
    logits = sd.get("roi_head.mask_head.conv_logits.weight")
    if logits is not None:
        if logits.shape[0] == 1 and k != 1:
            overrides.append(("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True))
        elif k is not None and logits.shape[0] != k:
            raise MmdetConversionError(
                f"roi_head.mask_head.conv_logits.weight has {logits.shape[0]} classes but the box "
                f"classifier has {k}"
            )
        elif k is None:
            k = logits.shape[0]
    if logits is None and (cls is not None or reg is not None):
        overrides.append(("MODEL.MASK_ON", False))
    return k, overrides


def _mask_rcnn_rules() -> List[Rule]:
    b, m = "roi_heads.box_head.", "roi_heads.mask_head."
    return [
        Rule(r"roi_head\.bbox_head\.shared_fcs\.(?P<i>[01])\.(?P<x>weight|bias)",
             lambda mt: f"{b}fc{int(mt.group('i')) + 1}.{mt.group('x')}"),
        Rule(r"roi_head\.bbox_head\.fc_cls\.(?P<x>weight|bias)", r"roi_heads.box_predictor.cls_score.\g<x>"),
        Rule(r"roi_head\.bbox_head\.fc_reg\.(?P<x>weight|bias)", r"roi_heads.box_predictor.bbox_pred.\g<x>"),
        Rule(r"roi_head\.mask_head\.convs\.(?P<i>\d+)\.conv\.(?P<x>weight|bias)",
             lambda mt: f"{m}mask_fcn{int(mt.group('i')) + 1}.{mt.group('x')}"),
        Rule(r"roi_head\.mask_head\.upsample\.(?P<x>weight|bias)", m + r"deconv.\g<x>"),
        Rule(r"roi_head\.mask_head\.conv_logits\.(?P<x>weight|bias)", m + r"predictor.\g<x>"),
    ]


# Registry of ROI-head families. Cascade / HTC: add entries with register_head_rules (their mmdet keys are
# roi_head.bbox_head.<stage>.*, roi_head.mask_head.<stage>.*).
HEAD_RULE_SETS: Dict[str, HeadRules] = {
    "mask_rcnn": HeadRules(
        rules=_mask_rcnn_rules(),
        predictors=[
            r"roi_head\.bbox_head\.fc_cls\..*",
            r"roi_head\.bbox_head\.fc_reg\..*",
            r"roi_head\.mask_head\.conv_logits\..*",
        ],
        num_classes=_mask_rcnn_num_classes,
        signature=r"roi_head\.(bbox|mask)_head\.(shared_fcs|fc_cls|fc_reg|convs|upsample|conv_logits)\..*",
    ),
}


def register_head_rules(name: str, head_rules: HeadRules, *, overwrite: bool = False) -> None:
    """Add a head family (e.g. "cascade_mask_rcnn", "htc") to the converter."""
    if name in HEAD_RULE_SETS and not overwrite:
        raise KeyError(f"head rules {name!r} already registered")
    HEAD_RULE_SETS[name] = head_rules


def detect_heads(sd: dict) -> Optional[str]:
    """Name of the registered head family whose signature the checkpoint matches (None: no ROI heads)."""
    roi_keys = [k for k in sd if k.startswith("roi_head.")]
    if not roi_keys:
        return None
    for name, hr in HEAD_RULE_SETS.items():
        if hr.signature and all(re.fullmatch(hr.signature, k) for k in roi_keys):
            return name
    for name, hr in HEAD_RULE_SETS.items():
        if hr.signature and any(re.fullmatch(hr.signature, k) for k in roi_keys):
            return name
    raise MmdetConversionError(
        "no registered head mapping matches the checkpoint's ROI-head keys (e.g. "
        f"{roi_keys[:3]}); registered: {sorted(HEAD_RULE_SETS)}. Cascade/HTC heads need "
        "register_head_rules(...)"
    )


# ----------------------------------------------------------------------------- loading
def load_mmdet_state_dict(path: str, *, trust_pickle: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """Read an mmdet ``.pth`` (``{"meta", "state_dict", "optimizer"}`` or a raw state dict).

    Loads with ``weights_only=True``; ``trust_pickle=True`` allows full unpickling for files whose metadata
    holds arbitrary Python objects (only for files you trust).
    """
    if not os.path.isfile(path):
        raise MmdetConversionError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and the way out
        hint = "" if trust_pickle else " (if you trust the file, retry with --trust-pickle)"
        raise MmdetConversionError(f"{path}: cannot be read as a PyTorch checkpoint: {e}{hint}") from e
    return extract_state_dict(obj, source=path)


def extract_state_dict(obj, source: str = "<checkpoint>") -> "OrderedDict[str, torch.Tensor]":
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        if obj.get("__author__") == AUTHOR:
            raise MmdetConversionError(f"{source}: already a converted detectron2 checkpoint")
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise MmdetConversionError(f"{source}: no state dict found (expected a dict with 'state_dict')")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise MmdetConversionError(f"{source}: entries that are not tensors: {bad[:10]}")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):  # saved from a DataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return OrderedDict(obj)


# ----------------------------------------------------------------------------- analysis
def _stage_blocks(sd) -> Dict[int, List[int]]:
    blocks: Dict[int, set] = {}
    for k in sd:
        m = re.match(r"backbone\.layer([1-4])\.(\d+)\.conv1\.weight$", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {s: sorted(v) for s, v in blocks.items()}


def analyze_mmdet_state_dict(
    sd: dict,
    *,
    deform_modulated: Optional[bool] = None,
    deform_num_groups: Optional[int] = None,
    source: str = "<checkpoint>",
) -> dict:
    """Architecture facts read from the tensors: depth, DCN and GC stages, neck, heads, classes."""
    info: dict = {"source": source, "has_neck": any(k.startswith("neck.") for k in sd)}
    blocks = _stage_blocks(sd)
    info["depth"] = None
    if blocks:
        counts = tuple(len(blocks.get(s, [])) for s in (1, 2, 3, 4))
        if counts not in _DEPTH_BY_BLOCKS:
            raise MmdetConversionError(f"{source}: unsupported ResNet layout, blocks per stage {counts}")
        info["depth"] = _DEPTH_BY_BLOCKS[counts]

    deform_on, gc_on, offset_ch, gc_ratio = [], [], set(), set()
    for s in (1, 2, 3, 4):
        n_blocks = len(blocks.get(s, []))
        with_dcn = [k for k in sd if re.match(rf"backbone\.layer{s}\.\d+\.conv2\.conv_offset\.weight$", k)]
        with_gc = [k for k in sd if re.match(rf"backbone\.layer{s}\.\d+\.context_block\.conv_mask\.weight$", k)]
        for name, found in (("DCN", with_dcn), ("context block", with_gc)):
            if found and len(found) != n_blocks:
                raise MmdetConversionError(
                    f"{source}: layer{s} has {name} in {len(found)} of {n_blocks} blocks; only whole stages "
                    "are supported"
                )
        deform_on.append(bool(with_dcn))
        gc_on.append(bool(with_gc))
        offset_ch.update(sd[k].shape[0] for k in with_dcn)
        for k in with_gc:
            hidden = sd[k.replace("conv_mask.weight", "channel_add_conv.0.weight")]
            gc_ratio.add(hidden.shape[0] / hidden.shape[1])
    info["deform_on_per_stage"] = deform_on
    info["gc_on_per_stage"] = gc_on
    if any(deform_on):
        if len(offset_ch) != 1:
            raise MmdetConversionError(f"{source}: DCN offset convs with different widths {sorted(offset_ch)}")
        ch = offset_ch.pop()
        if deform_modulated is None:
            v1, v2 = ch % 18 == 0, ch % 27 == 0
            if v1 == v2:
                raise MmdetConversionError(
                    f"{source}: offset conv with {ch} channels is ambiguous (DCNv1 with {ch // 18} groups or "
                    f"DCNv2 with {ch // 27}); pass deform_modulated / --deform-modulated explicitly"
                )
            deform_modulated = v2
        per = 27 if deform_modulated else 18
        if ch % per:
            raise MmdetConversionError(f"{source}: {ch} offset channels do not fit {'DCNv2' if per == 27 else 'DCN'}")
        groups = ch // per
        if deform_num_groups is not None and deform_num_groups != groups:
            raise MmdetConversionError(f"{source}: offset conv implies {groups} deform groups, not {deform_num_groups}")
        info["deform_modulated"] = bool(deform_modulated)
        info["deform_num_groups"] = groups
    if any(gc_on):
        if len(gc_ratio) != 1:
            raise MmdetConversionError(f"{source}: context blocks with different ratios {sorted(gc_ratio)}")
        info["gc_ratio"] = gc_ratio.pop()
    info["heads"] = detect_heads(sd)
    info["num_classes"], info["head_overrides"] = None, []
    if info["heads"] is not None:
        hr = HEAD_RULE_SETS[info["heads"]]
        if hr.num_classes is not None:
            info["num_classes"], info["head_overrides"] = hr.num_classes(sd)
    info["has_rpn"] = any(k.startswith("rpn_head.") for k in sd)
    return info


def mmdet_style_overrides() -> List[Tuple[str, object]]:
    """The (key, value) pairs every model running mmdet "pytorch"-style ResNet weights needs."""
    return [
        ("MODEL.RESNETS.STRIDE_IN_1X1", False),
        ("INPUT.FORMAT", "RGB"),
        ("MODEL.PIXEL_MEAN", list(MMDET_PIXEL_MEAN)),
        ("MODEL.PIXEL_STD", list(MMDET_PIXEL_STD)),
    ]


def config_overrides(info: dict, num_classes: Optional[int] = None) -> List[Tuple[str, object]]:
    """detectron2 config (key, value) pairs a cardd config needs to run the converted weights as mmdet did."""
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
    ov.extend(info.get("head_overrides", []))
    return ov


# ----------------------------------------------------------------------------- conversion
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
    heads: name of a registered head family; default: detected.
    ignore: regexes of mmdet keys to drop knowingly (e.g. an HTC semantic head you do not use).
    """
    sd = extract_state_dict(sd, source=source)
    info = analyze_mmdet_state_dict(
        sd, deform_modulated=deform_modulated, deform_num_groups=deform_num_groups, source=source
    )
    if heads is not None:
        if heads not in HEAD_RULE_SETS:
            raise MmdetConversionError(f"unknown head family {heads!r}; registered: {sorted(HEAD_RULE_SETS)}")
        info["heads"] = heads
    head_rules = HEAD_RULE_SETS[info["heads"]] if info["heads"] else None

    dropped: List[str] = []
    ckpt_k = info["num_classes"]
    if head_rules is not None and (drop_heads or (num_classes is not None and ckpt_k is not None)):
        if not drop_heads and num_classes != ckpt_k:
            raise MmdetConversionError(
                f"{source}: the checkpoint's heads predict {ckpt_k} classes (+ background) but num_classes is "
                f"{num_classes}; pass drop_heads / --drop-heads to drop the class-specific predictor layers "
                "and train them from scratch"
            )
        if drop_heads:
            pred_res = [re.compile(p) for p in head_rules.predictors]
            dropped = [k for k in sd if any(r.fullmatch(k) for r in pred_res)]

    prefix = "backbone.bottom_up." if info["has_neck"] else "backbone."
    rules = backbone_rules(prefix) + neck_rules() + rpn_rules() + (head_rules.rules if head_rules else [])
    ignore_res = [re.compile(p) for p in ignore]

    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    mapping: Dict[str, str] = {}
    unknown: List[str] = []
    for key, value in sd.items():
        if key.endswith(".num_batches_tracked") or key in dropped or any(r.fullmatch(key) for r in ignore_res):
            continue
        new = None
        for rule in rules:
            new = rule.apply(key)
            if new is not None:
                break
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
            f"{source}: {len(unknown)} mmdet key(s) have no detectron2 mapping (supported: Mask R-CNN "
            f"R-50/101 FPN with DCN/DCNv2/GCNet; use ignore= / --ignore REGEX to drop keys knowingly):\n  {shown}"
        )
    if drop_heads:  # the predictors' class count and class-agnostic flags no longer come from the file
        info = dict(info, num_classes=None, head_overrides=[])
    overrides = config_overrides(info, num_classes)
    return ConversionResult(model=out, info=info, overrides=overrides, dropped=dropped, mapping=mapping)


def convert_mmdet_checkpoint(src: str, dst: str, *, trust_pickle: bool = False, **kwargs) -> ConversionResult:
    """Read ``src`` (mmdet .pth), convert, write ``dst`` (detectron2 .pth). kwargs: see convert_mmdet_state_dict."""
    sd = load_mmdet_state_dict(src, trust_pickle=trust_pickle)
    result = convert_mmdet_state_dict(sd, source=src, **kwargs)
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    torch.save(result.checkpoint(), dst)
    return result
