"""The architecture an mmdetection 2.x state dict holds, read from its keys and tensor shapes."""
from __future__ import annotations

import re
from typing import Dict, List, Optional

from .mmdet_heads import HEAD_FAMILIES, detect_heads, read_head_facts
from .mmdet_state_dict import MmdetConversionError

__all__ = ["analyze_mmdet_state_dict"]

_DEPTH_BY_BLOCKS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def _stage_blocks(sd) -> Dict[int, List[int]]:
    blocks: Dict[int, set] = {}
    for k in sd:
        m = re.match(r"backbone\.layer([1-4])\.(\d+)\.conv1\.weight$", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {s: sorted(v) for s, v in blocks.items()}


def _deform_layout(offset_ch: int, modulated: Optional[bool], groups: Optional[int], source: str):
    """(modulated, groups) of offset convs with ``offset_ch`` output channels: 18 per group for DCNv1
    (dy, dx per 3x3 point), 27 for DCNv2 (+ a mask logit)."""
    if modulated is None:
        v1, v2 = offset_ch % 18 == 0, offset_ch % 27 == 0
        if v1 == v2:
            raise MmdetConversionError(
                f"{source}: offset conv with {offset_ch} channels is ambiguous (DCNv1 with {offset_ch // 18} groups "
                f"or DCNv2 with {offset_ch // 27}); pass deform_modulated / --deform-modulated explicitly"
            )
        modulated = v2
    per = 27 if modulated else 18
    if offset_ch % per:
        raise MmdetConversionError(
            f"{source}: {offset_ch} offset channels do not fit {'DCNv2' if modulated else 'DCN'}"
        )
    if groups is not None and groups != offset_ch // per:
        raise MmdetConversionError(f"{source}: offset conv implies {offset_ch // per} deform groups, not {groups}")
    return bool(modulated), offset_ch // per


def analyze_mmdet_state_dict(
    sd: dict,
    *,
    deform_modulated: Optional[bool] = None,
    deform_num_groups: Optional[int] = None,
    heads: Optional[str] = None,
    source: str = "<checkpoint>",
) -> dict:
    """Architecture facts: ResNet depth, DCN and GC stages, neck, RPN, ROI-head family (``heads`` forces one)
    and what its tensors say (:func:`~.mmdet_heads.read_head_facts`)."""
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
        info["deform_modulated"], info["deform_num_groups"] = _deform_layout(
            offset_ch.pop(), deform_modulated, deform_num_groups, source
        )
    if any(gc_on):
        if len(gc_ratio) != 1:
            raise MmdetConversionError(f"{source}: context blocks with different ratios {sorted(gc_ratio)}")
        info["gc_ratio"] = gc_ratio.pop()
    if heads is not None and heads not in HEAD_FAMILIES:
        raise MmdetConversionError(f"unknown head family {heads!r}; known: {list(HEAD_FAMILIES)}")
    info["heads"] = heads if heads is not None else detect_heads(sd)
    info["roi_heads"] = read_head_facts(sd, HEAD_FAMILIES[info["heads"]]) if info["heads"] else {}
    info["num_classes"] = info["roi_heads"].get("num_classes")
    info["has_rpn"] = any(k.startswith("rpn_head.") for k in sd)
    return info
