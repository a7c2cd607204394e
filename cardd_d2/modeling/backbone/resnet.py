"""ResNet / ResNet-FPN backbones with deformable conv (any kernel backend) and GCNet context blocks.

Registered in detectron2's BACKBONE_REGISTRY as ``build_cardd_resnet_backbone`` (C4 and plain ResNet, like
``build_resnet_backbone``) and ``build_cardd_resnet_fpn_backbone`` (like ``build_resnet_fpn_backbone``).

Config keys read, besides everything ``build_resnet_backbone`` reads:

* detectron2's own ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` / ``DEFORM_MODULATED`` / ``DEFORM_NUM_GROUPS``;
* ``MODEL.RESNETS.DEFORM_BACKEND``: "auto" | "torchvision" | "sampling" | "detectron2" (see cardd_d2/config.py);
* ``MODEL.RESNETS.GC_ON_PER_STAGE`` (res2..res5) and ``MODEL.RESNETS.GC_RATIO``;
* ``MODEL.RESNETS.NORM`` may also be "FrozenStatsBN" (:class:`~..layers.norm.FrozenStatsBatchNorm2d`: statistics
  fixed, scale and shift trained, as mmdetection's ``norm_eval``); stages up to ``FREEZE_AT`` are frozen entirely.

How it reuses detectron2 (no ResNet code duplicated).  detectron2's ``DeformBottleneckBlock.__init__``
instantiates ``detectron2.layers.DeformConv``, which is a dummy that raises when detectron2 has no compiled
``_C``, so it cannot even be constructed as a base class.  Instead :class:`CarDDBottleneckBlock` subclasses the
plain ``BottleneckBlock``: the parent builds conv1/conv2/conv3/shortcut with detectron2's own layers, then for a
deformable block conv2 is swapped for a deformable conv of the same geometry (re-using the parent's norm
module) and a ``conv2_offset`` conv is added.  The parameter names are therefore exactly those of detectron2's
``DeformBottleneckBlock`` (``conv2.weight``, ``conv2.norm.*``, ``conv2_offset.*``), so detectron2 DCN
checkpoints load, and a plain ResNet checkpoint loads with only ``conv2_offset`` / ``context_block`` missing.
Stages are assembled with detectron2's ``ResNet.make_stage`` and wrapped in detectron2's ``ResNet``, so
``BACKBONE.FREEZE_AT`` (which freezes whole blocks, offset convs and context blocks included),
``OUT_FEATURES`` and the FPN wiring behave exactly as upstream.  Blocks that need neither DCN nor GC are
detectron2's unchanged ``BottleneckBlock`` / ``BasicBlock``.
"""
from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from torch import nn

from ..layers.context_block import ContextBlock
from ..layers.deform_conv import build_deform_conv, check_deform_backend
from ..layers.norm import FROZEN_STATS_BN, FrozenStatsBatchNorm2d

__all__ = [
    "CarDDBottleneckBlock",
    "build_cardd_resnet_backbone",
    "build_cardd_resnet_fpn_backbone",
]

_BLOCKS_PER_DEPTH = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class CarDDBottleneckBlock(BottleneckBlock):
    """detectron2's bottleneck with optional deformable conv2 (v1 or v2) and an optional GCNet context block.

    Extra keyword arguments over ``BottleneckBlock``: ``deform_on``, ``deform_modulated``, ``deform_num_groups``,
    ``deform_backend`` ("auto" | "torchvision" | "sampling" | "detectron2"), ``gc_on``, ``gc_ratio``.
    The context block (mmdet plugin position 'after_conv3') acts on conv3's normalised output before the
    residual addition.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        bottleneck_channels,
        stride=1,
        num_groups=1,
        norm="BN",
        stride_in_1x1=False,
        dilation=1,
        deform_on=False,
        deform_modulated=False,
        deform_num_groups=1,
        deform_backend="auto",
        gc_on=False,
        gc_ratio=1.0 / 4,
    ):
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        self.deform_on = bool(deform_on)
        self.deform_modulated = bool(deform_modulated) and self.deform_on
        if self.deform_on:
            plain = self.conv2  # geometry and norm module come from the parent's 3x3 conv
            self.conv2 = build_deform_conv(
                plain.in_channels,
                plain.out_channels,
                modulated=self.deform_modulated,
                backend=deform_backend,
                kernel_size=3,
                stride=plain.stride,
                padding=plain.padding,
                bias=False,
                groups=plain.groups,
                dilation=plain.dilation,
                deformable_groups=deform_num_groups,
                norm=plain.norm,
            )
            weight_init.c2_msra_fill(self.conv2)
            per_point = 3 if self.deform_modulated else 2  # (dy, dx[, mask]) per kernel point
            self.conv2_offset = Conv2d(
                plain.in_channels,
                per_point * 9 * deform_num_groups,
                kernel_size=3,
                stride=plain.stride,
                padding=plain.padding,
                dilation=plain.dilation,
            )
            nn.init.zeros_(self.conv2_offset.weight)
            nn.init.zeros_(self.conv2_offset.bias)
        self.context_block = ContextBlock(out_channels, gc_ratio) if gc_on else None

    def _conv2(self, out):
        if not self.deform_on:
            return self.conv2(out)
        raw = self.conv2_offset(out)
        if self.deform_modulated:
            # same split as detectron2 / mmcv: first 2/3 of the channels are offsets, last 1/3 mask logits
            n_off = raw.shape[1] * 2 // 3
            return self.conv2(out, raw[:, :n_off], raw[:, n_off:].sigmoid())
        return self.conv2(out, raw)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = F.relu_(self._conv2(out))
        out = self.conv3(out)
        if self.context_block is not None:
            out = self.context_block(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


def _per_stage(cfg_value, name):
    values = list(cfg_value)
    if len(values) != 4:
        raise ValueError(f"MODEL.RESNETS.{name} must have 4 entries (res2..res5), got {values}")
    return [bool(v) for v in values]


def build_cardd_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    """A detectron2 ``ResNet`` honouring the DCN and GC keys (see module docstring)."""
    r = cfg.MODEL.RESNETS
    depth = r.DEPTH
    if depth not in _BLOCKS_PER_DEPTH:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_DEPTH)}, got {depth}")
    deform_on = _per_stage(r.DEFORM_ON_PER_STAGE, "DEFORM_ON_PER_STAGE")
    gc_on = _per_stage(r.GC_ON_PER_STAGE, "GC_ON_PER_STAGE")
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    backend = check_deform_backend(r.DEFORM_BACKEND) if any(deform_on) else "auto"

    basic = depth in (18, 34)
    if basic:
        problems = []
        if r.RES2_OUT_CHANNELS != 64:
            problems.append("RES2_OUT_CHANNELS must be 64")
        if any(deform_on) or any(gc_on):
            problems.append("DEFORM_ON_PER_STAGE / GC_ON_PER_STAGE need bottleneck blocks (depth >= 50)")
        if r.RES5_DILATION != 1 or r.NUM_GROUPS != 1:
            problems.append("RES5_DILATION and NUM_GROUPS must be 1")
        if problems:
            raise ValueError(f"ResNet-{depth}: " + "; ".join(problems))

    norm = FrozenStatsBatchNorm2d if r.NORM == FROZEN_STATS_BN else r.NORM
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=norm)
    in_ch = r.STEM_OUT_CHANNELS
    out_ch = r.RES2_OUT_CHANNELS
    mid_ch = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for i, n_blocks in enumerate(_BLOCKS_PER_DEPTH[depth]):
        res5 = i == 3
        dilation = r.RES5_DILATION if res5 else 1
        # res2 keeps the stem's resolution; a dilated res5 keeps res4's.
        first_stride = 1 if (i == 0 or dilation == 2) else 2
        kwargs = dict(
            num_blocks=n_blocks,
            stride_per_block=[first_stride] + [1] * (n_blocks - 1),
            in_channels=in_ch,
            out_channels=out_ch,
            norm=norm,
        )
        if basic:
            kwargs["block_class"] = BasicBlock
        else:
            kwargs.update(
                bottleneck_channels=mid_ch,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=r.NUM_GROUPS,
            )
            if deform_on[i] or gc_on[i]:
                kwargs.update(
                    block_class=CarDDBottleneckBlock,
                    deform_on=deform_on[i],
                    deform_modulated=r.DEFORM_MODULATED,
                    deform_num_groups=r.DEFORM_NUM_GROUPS,
                    deform_backend=backend,
                    gc_on=gc_on[i],
                    gc_ratio=r.GC_RATIO,
                )
            else:
                kwargs["block_class"] = BottleneckBlock
        stages.append(ResNet.make_stage(**kwargs))
        in_ch, out_ch, mid_ch = out_ch, out_ch * 2, mid_ch * 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_cardd_resnet_backbone(cfg, input_shape: ShapeSpec):
    """Drop-in for ``build_resnet_backbone`` (plain / C4 models) with working DCN and GCNet options."""
    return build_cardd_resnet(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_cardd_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Drop-in for ``build_resnet_fpn_backbone`` with working DCN and GCNet options."""
    return FPN(
        bottom_up=build_cardd_resnet(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
