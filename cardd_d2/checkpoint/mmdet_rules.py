"""mmdetection 2.x -> detectron2 key rules of the backbone, the FPN neck and the RPN head.

====================================================  ====================================================
mmdet                                                 detectron2 (FPN models: ResNet under ``backbone.bottom_up``)
====================================================  ====================================================
``backbone.conv1`` / ``backbone.bn1``                 ``backbone.bottom_up.stem.conv1`` / ``...conv1.norm``
``backbone.layerN.M.convK`` / ``.bnK``                ``backbone.bottom_up.res{N+1}.M.convK`` / ``.convK.norm``
``backbone.layerN.M.downsample.0`` / ``.1``           ``...res{N+1}.M.shortcut`` / ``.shortcut.norm``
``backbone.layerN.M.conv2.conv_offset``               ``...res{N+1}.M.conv2_offset``        (DCN / DCNv2)
``backbone.layerN.M.context_block.*``                 ``...res{N+1}.M.context_block.*``     (GCNet)
``neck.lateral_convs.i.conv`` / ``neck.fpn_convs.i``  ``backbone.fpn_lateral{i+2}`` / ``backbone.fpn_output{i+2}``
``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg``     ``proposal_generator.rpn_head.conv`` / ``objectness_logits``
                                                      / ``anchor_deltas``
====================================================  ====================================================

BatchNorm ``weight/bias/running_mean/running_var`` keep their names; ``num_batches_tracked`` has no counterpart.
No tensor is re-ordered: mmcv's ``conv_offset`` has detectron2's (dy, dx)-interleaved layout (DCNv2: offsets in the
first 2/3 of the channels, mask logits in the last 1/3), and mmdet's RPN has one objectness channel per anchor in
detectron2's anchor-major order. The ROI-head rules are in :mod:`.mmdet_heads`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

__all__ = ["Rule", "BN_PARAMS", "shifted", "backbone_rules", "NECK_RULES", "RPN_RULES"]

BN_PARAMS = "weight|bias|running_mean|running_var"

Target = Union[str, Callable[["re.Match"], str]]


@dataclass(frozen=True)
class Rule:
    """``pattern`` is matched in full against an mmdet key; ``target`` is a ``re.Match.expand`` template or a
    function of the match returning the detectron2 key."""

    pattern: str
    target: Target

    def apply(self, key: str) -> Optional[str]:
        m = re.fullmatch(self.pattern, key)
        if m is None:
            return None
        return self.target(m) if callable(self.target) else m.expand(self.target)


def shifted(group: str, by: int, template: str) -> Callable[["re.Match"], str]:
    """A target whose ``{n}`` is the match's ``group`` + ``by`` (the two libraries number stages, levels and layers
    from different starts) and whose other ``{name}`` fields are the match's named groups."""
    return lambda m: template.format(**{**m.groupdict(), "n": int(m.group(group)) + by})


def backbone_rules(dst_prefix: str) -> List[Rule]:
    """ResNet rules; ``dst_prefix`` is ``backbone.bottom_up.`` (FPN models) or ``backbone.`` (no neck)."""
    p = dst_prefix
    layer = r"backbone\.layer(?P<s>[1-4])\.(?P<b>\d+)\."
    block = p + "res{n}.{b}."
    return [
        Rule(r"backbone\.conv1\.weight", p + "stem.conv1.weight"),
        Rule(rf"backbone\.bn1\.(?P<x>{BN_PARAMS})", p + r"stem.conv1.norm.\g<x>"),
        Rule(layer + r"conv(?P<k>[123])\.weight", shifted("s", 1, block + "conv{k}.weight")),
        Rule(layer + rf"bn(?P<k>[123])\.(?P<x>{BN_PARAMS})", shifted("s", 1, block + "conv{k}.norm.{x}")),
        Rule(layer + r"downsample\.0\.weight", shifted("s", 1, block + "shortcut.weight")),
        Rule(layer + rf"downsample\.1\.(?P<x>{BN_PARAMS})", shifted("s", 1, block + "shortcut.norm.{x}")),
        Rule(layer + r"conv2\.conv_offset\.(?P<x>weight|bias)", shifted("s", 1, block + "conv2_offset.{x}")),
        Rule(layer + r"context_block\.(?P<x>conv_mask\.(weight|bias)|channel_add_conv\.[013]\.(weight|bias))",
             shifted("s", 1, block + "context_block.{x}")),
    ]


NECK_RULES = [
    Rule(r"neck\.lateral_convs\.(?P<i>[0-3])\.conv\.(?P<x>weight|bias)",
         shifted("i", 2, "backbone.fpn_lateral{n}.{x}")),
    Rule(r"neck\.fpn_convs\.(?P<i>[0-3])\.conv\.(?P<x>weight|bias)",
         shifted("i", 2, "backbone.fpn_output{n}.{x}")),
]

_RPN = "proposal_generator.rpn_head."
RPN_RULES = [
    Rule(r"rpn_head\.rpn_conv\.(?P<x>weight|bias)", _RPN + r"conv.\g<x>"),
    Rule(r"rpn_head\.rpn_cls\.(?P<x>weight|bias)", _RPN + r"objectness_logits.\g<x>"),
    Rule(r"rpn_head\.rpn_reg\.(?P<x>weight|bias)", _RPN + r"anchor_deltas.\g<x>"),
]
