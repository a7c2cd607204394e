"""CSNet (SOD100K, "CSNet_training" variant as CarDD trained it), re-implemented.

Architecture:

* 18 "ILBlocks" in 5 stages (1 + [3, 4, 6, 4]).  Each block = a generalized octave conv (gOctConv; 3x3 for the very
  first block and the stride-2 blocks, else 1x1) with BN + PReLU per output branch, then two depthwise 3x3 convs
  (weights x100) with BN + PReLU per branch.  Branch ``k`` of a stage runs at 1/2**k of the stage resolution; the
  stage-2/3/4 first blocks average-pool by 2 first.  The last block of stages 2-4 collapses to one branch.
* Head (``oct_fuse``): gOctConv 1x1 over the three stage outputs (1/2, 1/4, 1/8) -> three branches, a multi-scale
  block per branch (3x3 convs x100 with dilations 1, 2, 4, 8, 16, concatenated, BN + PReLU), gOctConv 1x1 to one
  branch (132 channels unpruned), then ``cls_layer`` 1x1 -> one logit map, bilinear resize to the input size.

Every channel count comes from a per-layer config (:func:`csnet_layer_config`), so the released pruned models
(``variant="L-x2"`` 140,894 params, ``"L-x1"`` 93,647) are built the same way as the unpruned 788,631-param model.
Parameter / module names follow the reference so its checkpoints load with ``load_state_dict``.

Training extras of the reference (used by :mod:`cardd_sod.losses` and the trainer):

* :func:`csnet_dynamic_weight_decay` - the "FLOPs" regulariser 0.5 * sum_BN sum_{b,c} |mean_hw(out)| * gamma^2 / B
  over the BNs of every ILBlock (activations recorded in the last train-mode forward, detached).
* :func:`csnet_param_groups` - the reference's Adam groups (BN weights of the gOctConv and first depthwise conv of
  every block get weight decay 0).

Note (faithful to the reference): a freshly built model gives NaN/inf in eval mode (default BN running statistics
times the x100 weights) until it has been run in train mode.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..data.preprocess import PreprocessSpec
from .layers import Conv2dX100, check_input
from .spec import SODModelSpec

__all__ = ["CSNet", "csnet_layer_config", "csnet_config_from_reference", "csnet_dynamic_weight_decay",
           "csnet_param_groups", "CSNET_VARIANTS", "SPEC"]

STAGES = (3, 4, 6, 4)
DILATIONS = (1, 2, 4, 8, 16)



# ----------------------------------------------------------------------------------------------------------------
# layer configs
# ----------------------------------------------------------------------------------------------------------------
def _round_half_even(x: float) -> int:
    return int(round(x))


def csnet_layer_config(width: int = 20, expand: float = 2.0, split: Sequence[float] = (0.5, 0.5),
                       stages: Sequence[int] = STAGES) -> Dict:
    """The unpruned channel config (reference ``init_layers``): base width ``width * expand`` (40 for CarDD).

    Returns ``{"stages": [...], "blocks": [out channels per branch for each of the 1 + sum(stages) blocks],
    "head": {"fuse": [...], "ms": [...], "dilations": [[5 ints] per branch], "out": int}}``.
    """
    base = _round_half_even(width * expand) if expand > 1 else int(width)
    split = [float(s) for s in split]

    def br(c):
        return [_round_half_even(c * s) for s in split]

    blocks: List[List[int]] = [br(base)]                      # stage 0
    blocks += [br(base) for _ in range(stages[0])]            # stage 1
    blocks += [br(2 * base) for _ in range(stages[1] - 1)] + [[2 * base]]
    blocks += [br(4 * base) for _ in range(stages[2] - 1)] + [[4 * base]]
    blocks += [br(4 * base) for _ in range(stages[3] - 1)] + [[4 * base]]
    sides = [2 * base, 4 * base, 4 * base]
    fuse = [s // 3 for s in sides]
    dils = []
    for c in fuse:
        each = c // len(DILATIONS)
        dils.append([each] * (len(DILATIONS) - 1) + [c - each * (len(DILATIONS) - 1)])
    return {"stages": list(stages), "blocks": blocks,
            "head": {"fuse": fuse, "ms": list(fuse), "dilations": dils, "out": sum(fuse)}}


# Released pruned configs (SOD100K checkpoints csnet-L-x2.bin / csnet-L-x1.bin), written out as numbers.
CSNET_VARIANTS: Dict[str, Dict] = {
    "L-x2": {
        "stages": [3, 4, 6, 4],
        "blocks": [[13, 10], [13, 12], [18, 11], [18, 12], [28, 21], [34, 22], [31, 29], [51], [23, 26], [27, 26],
                   [25, 20], [17, 21], [19, 25], [38], [18, 31], [31, 27], [26, 44], [64]],
        "head": {"fuse": [17, 38, 32], "ms": [8, 24, 18],
                 "dilations": [[2, 1, 2, 2, 1], [0, 6, 6, 7, 5], [0, 1, 3, 7, 7]], "out": 79},
    },
    "L-x1": {
        "stages": [3, 4, 6, 4],
        "blocks": [[8, 10], [9, 10], [10, 10], [10, 10], [19, 13], [19, 17], [20, 12], [34], [24, 21], [26, 27],
                   [22, 18], [19, 18], [23, 18], [38], [18, 29], [25, 24], [26, 20], [50]],
        "head": {"fuse": [12, 24, 24], "ms": [11, 18, 17],
                 "dilations": [[1, 2, 2, 2, 4], [1, 4, 4, 4, 5], [2, 2, 4, 5, 4]], "out": 60},
    },
}


def csnet_config_from_reference(layer_config: Sequence) -> Dict:
    """Convert a reference ``layer_config`` list (the pickled ``*.bin`` files: 1 + sum(stages) block entries
    ``[in, out]``, then ``[fuse_in, fuse_out]``, ``[ms_in, ms_out, dilation_channels]``, ``[ms_out, [out]]`` and
    finally ``stages``) into this module's dict format."""
    def ints(a):
        return [int(round(float(v))) for v in (a if hasattr(a, "__len__") else [a])]

    stages = [int(s) for s in layer_config[-1]]
    nblocks = 1 + sum(stages)
    if len(layer_config) != nblocks + 4:
        raise ValueError(f"CSNet reference layer config: expected {nblocks + 4} entries for stages {stages}, "
                         f"got {len(layer_config)}")
    blocks = [ints(layer_config[i][1]) for i in range(nblocks)]
    for i in range(1, nblocks):
        if ints(layer_config[i][0]) != blocks[i - 1]:
            raise ValueError(f"CSNet reference layer config: block {i} input {ints(layer_config[i][0])} does not "
                             f"match block {i - 1} output {blocks[i - 1]}")
    fuse = ints(layer_config[nblocks][1])
    ms = ints(layer_config[nblocks + 1][1])
    dils = [ints(d) for d in layer_config[nblocks + 1][2]]
    out = ints(layer_config[nblocks + 2][1])
    if len(out) != 1:
        raise ValueError(f"CSNet reference layer config: head output must be one branch, got {out}")
    return {"stages": stages, "blocks": blocks, "head": {"fuse": fuse, "ms": ms, "dilations": dils, "out": out[0]}}


def _validate_config(cfg: Dict) -> None:
    stages = cfg["stages"]
    blocks = cfg["blocks"]
    if len(stages) != 4:
        raise ValueError(f"CSNet config: expected 4 stages, got {stages}")
    if len(blocks) != 1 + sum(stages):
        raise ValueError(f"CSNet config: expected {1 + sum(stages)} blocks for stages {stages}, got {len(blocks)}")
    head = cfg["head"]
    if len(head["fuse"]) != 3 or len(head["ms"]) != 3 or len(head["dilations"]) != 3:
        raise ValueError("CSNet config: the head needs three branches (stage 2, 3 and 4 outputs)")
    for k, (c, d) in enumerate(zip(head["ms"], head["dilations"])):
        if len(d) != len(DILATIONS) or sum(d) != c:
            raise ValueError(f"CSNet config: head branch {k}: dilation channels {d} must be 5 numbers summing "
                             f"to {c}")


# ----------------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------------
def _as_list(xs):
    return [xs] if torch.is_tensor(xs) else list(xs)


def _offsets(splits: Sequence[int]) -> List[int]:
    out = [0]
    for s in splits:
        out.append(out[-1] + int(s))
    return out


class OctaveConv(nn.Module):
    """Generalized octave convolution between multi-resolution branch lists (reference ``gOctaveConv``).

    One weight tensor [sum(out), sum(in), k, k] is cut into (out branch j, in branch i) blocks.  Branch i lives
    at 1/2**i resolution: i > j -> conv then bilinear upsample by 2**(i-j); i < j -> max-pool by 2**(j-i) then
    conv; stride 2 average-pools every input by 2 first.  A single-in / single-out conv multiplies its weight by
    100 (the reference then uses its x100 conv); that never happens in the released configs.
    """

    def __init__(self, in_splits: Sequence[int], out_splits: Sequence[int], kernel_size: int, stride: int = 1):
        super().__init__()
        self.in_splits = [int(c) for c in in_splits]
        self.out_splits = [int(c) for c in out_splits]
        self.kernel_size = int(kernel_size)
        self.padding = self.kernel_size // 2
        self.stride = int(stride)
        self.scale = 100.0 if len(self.in_splits) == 1 and len(self.out_splits) == 1 else 1.0
        self.weight = nn.Parameter(torch.empty(sum(self.out_splits), sum(self.in_splits), self.kernel_size,
                                               self.kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self._in_off = _offsets(self.in_splits)
        self._out_off = _offsets(self.out_splits)

    def forward(self, xs) -> List[Optional[torch.Tensor]]:
        xs = _as_list(xs)
        outs: List[Optional[torch.Tensor]] = [None] * len(self.out_splits)
        weight = self.weight * self.scale if self.scale != 1.0 else self.weight
        for i, x in enumerate(xs):
            if x is None or self.in_splits[i] == 0:
                continue
            if self.stride == 2:
                x = F.avg_pool2d(x, 2, 2)
            for j, cout in enumerate(self.out_splits):
                if cout == 0:
                    continue
                w = weight[self._out_off[j]:self._out_off[j + 1], self._in_off[i]:self._in_off[i + 1]]
                if i > j:
                    y = F.interpolate(F.conv2d(x, w, None, 1, self.padding), scale_factor=2 ** (i - j),
                                      mode="bilinear")
                elif i < j:
                    f = 2 ** (j - i)
                    y = F.conv2d(F.max_pool2d(x, f, f), w, None, 1, self.padding)
                else:
                    y = F.conv2d(x, w, None, 1, self.padding)
                outs[j] = y if outs[j] is None else outs[j] + y
        return outs

    def extra_repr(self) -> str:
        return f"in={self.in_splits}, out={self.out_splits}, kernel_size={self.kernel_size}, stride={self.stride}"


class _BranchBNPReLU(nn.Module):
    """Mixin: per-branch BN + PReLU (``bns`` / ``prelus``, None for empty branches) and activity recording."""

    track_activity = False

    def _make_norms(self, splits: Sequence[int]) -> None:
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) if c > 0 else None for c in splits])
        self.prelus = nn.ModuleList([nn.PReLU(c) if c > 0 else None for c in splits])
        self.activity: Optional[List[Optional[torch.Tensor]]] = None

    def _norm_act(self, ys: List[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        out = []
        for k, y in enumerate(ys):
            if y is None or self.bns[k] is None:
                out.append(None)
            else:
                out.append(self.prelus[k](self.bns[k](y)))
        if self.track_activity and self.training:
            # |spatial mean| per (sample, channel) of each branch output, detached (the reference's BN hook).
            self.activity = [None if o is None else o.detach().float().mean(dim=(2, 3)).abs() for o in out]
        return out


class OctaveConvBNPReLU(_BranchBNPReLU):
    """gOctConv + per-branch BN + PReLU (reference ``gOctaveCBR``)."""

    def __init__(self, in_splits, out_splits, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = OctaveConv(in_splits, out_splits, kernel_size, stride)
        self._make_norms(self.conv.out_splits)

    def forward(self, xs):
        return self._norm_act(self.conv(xs))


class DepthwiseBNPReLU(_BranchBNPReLU):
    """Per-branch depthwise 3x3 conv (weights x100) + BN + PReLU (reference ``SimplifiedGOctConvBR``)."""

    def __init__(self, splits: Sequence[int]):
        super().__init__()
        self.convs = nn.ModuleList([Conv2dX100(c, c, 3, padding=1, groups=c) if c > 0 else None for c in splits])
        self._make_norms(splits)

    def forward(self, xs):
        xs = _as_list(xs)
        ys = [None if (x is None or conv is None) else conv(x) for x, conv in zip(xs, self.convs)]
        return self._norm_act(ys)


class ILBlock(nn.Module):
    def __init__(self, in_splits, out_splits, stride: int = 1, first: bool = False):
        super().__init__()
        k = 3 if (first or stride == 2) else 1
        self.conv1x1 = OctaveConvBNPReLU(in_splits, out_splits, k, stride)
        self.conv3x3_1 = DepthwiseBNPReLU(out_splits)
        self.conv3x3_2 = DepthwiseBNPReLU(out_splits)

    def forward(self, xs):
        return self.conv3x3_2(self.conv3x3_1(self.conv1x1(xs)))


class MSBlock(nn.Module):
    """Dilated 3x3 convs (x100) with dilations 1, 2, 4, 8, 16, concatenated, then BN + PReLU."""

    def __init__(self, in_channels: int, dilation_channels: Sequence[int]):
        super().__init__()
        self.msconv = nn.ModuleList([
            Conv2dX100(in_channels, int(c), 3, padding=d, dilation=d) if c > 0 else None
            for c, d in zip(dilation_channels, DILATIONS)])
        out = int(sum(dilation_channels))
        self.bn = nn.BatchNorm2d(out)
        self.prelu = nn.PReLU(out)

    def forward(self, x):
        return self.prelu(self.bn(torch.cat([conv(x) for conv in self.msconv if conv is not None], dim=1)))


class PallMSBlock(nn.Module):
    def __init__(self, in_splits, dilation_channels):
        super().__init__()
        self.convs = nn.ModuleList([MSBlock(c, d) if max(d) > 0 else None
                                    for c, d in zip(in_splits, dilation_channels)])

    def forward(self, xs):
        xs = _as_list(xs)
        return [None if (m is None or x is None) else m(x) for m, x in zip(self.convs, xs)]


class CSFHead(nn.Module):
    def __init__(self, side_channels: Sequence[int], head: Dict):
        super().__init__()
        self.fuse = OctaveConvBNPReLU(side_channels, head["fuse"], 1)
        self.ms = PallMSBlock(head["fuse"], head["dilations"])
        self.fuse1x1 = OctaveConvBNPReLU(head["ms"], [head["out"]], 1)

    def forward(self, xs):
        return self.fuse1x1(self.ms(self.fuse(xs)))


class CSNet(nn.Module):
    """CSNet; ``forward(x)`` returns one logit map [B, 1, H, W] (input RGB, ImageNet-normalised)."""


    def __init__(self, layer_config: Optional[Dict] = None, variant: Optional[str] = None, num_classes: int = 1):
        super().__init__()
        if layer_config is not None and variant is not None:
            raise ValueError("CSNet: give either layer_config or variant, not both")
        if variant is not None:
            if variant not in CSNET_VARIANTS:
                raise ValueError(f"CSNet: unknown variant {variant!r}; known: {sorted(CSNET_VARIANTS)}")
            layer_config = CSNET_VARIANTS[variant]
        if layer_config is None:
            layer_config = csnet_layer_config()
        elif isinstance(layer_config, (list, tuple)):
            layer_config = csnet_config_from_reference(layer_config)
        cfg = copy.deepcopy(layer_config)
        _validate_config(cfg)
        self.layer_config = cfg
        self.stages = list(cfg["stages"])
        blocks = cfg["blocks"]

        self.stage0 = nn.ModuleList([ILBlock([3], blocks[0], stride=1, first=True)])
        idx = 1
        side_channels = []
        for s, n in enumerate(self.stages, start=1):
            mods = []
            for b in range(n):
                stride = 2 if (s >= 2 and b == 0) else 1
                mods.append(ILBlock(blocks[idx - 1], blocks[idx], stride=stride))
                idx += 1
            setattr(self, f"stage{s}", nn.ModuleList(mods))
            if s >= 2:
                side_channels.append(blocks[idx - 1][0])
        self.oct_fuse = CSFHead(side_channels, cfg["head"])
        self.cls_layer = nn.Conv2d(cfg["head"]["out"], num_classes, kernel_size=1)
        for m in self.modules():
            if isinstance(m, _BranchBNPReLU):
                m.track_activity = False
        for blk in self.il_blocks():
            for m in (blk.conv1x1, blk.conv3x3_1, blk.conv3x3_2):
                m.track_activity = True

    def il_blocks(self) -> List[ILBlock]:
        """The 1 + sum(stages) ILBlocks in forward order."""
        out = list(self.stage0)
        for s in range(1, len(self.stages) + 1):
            out.extend(getattr(self, f"stage{s}"))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "CSNet", SPEC.min_input_size, SPEC.size_divisor)
        feats = self.stage0[0](x)
        sides = []
        for s in range(1, len(self.stages) + 1):
            for blk in getattr(self, f"stage{s}"):
                feats = blk(feats)
            if s >= 2:
                sides.append(feats[0])
        fused = self.oct_fuse(sides)
        logits = self.cls_layer(fused[0])
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)

    @staticmethod
    def saliency(outputs: torch.Tensor) -> torch.Tensor:
        """Test-time prediction: sigmoid of the logit map, [B, 1, H, W] in [0, 1]."""
        return torch.sigmoid(outputs)


# ----------------------------------------------------------------------------------------------------------------
# training helpers
# ----------------------------------------------------------------------------------------------------------------
def csnet_dynamic_weight_decay(model: CSNet, batch_size: Optional[int] = None, flop_expand: float = 1.0
                               ) -> torch.Tensor:
    """The reference's "dynamic weight decay" (``model.get_flops()`` with its BN hooks) for the LAST train-mode
    forward of ``model``:

        0.5 * sum over ILBlock BNs, samples b, channels c of  w_branch * |mean_hw(BN-PReLU output)[b, c]| * gamma_c^2
        divided by ``batch_size`` (default: the batch size of that forward).

    The activations are detached, so the gradient only reaches the BN weights (gamma).  ``flop_expand`` is the
    reference's AUTO.FLOPS.EXPAND (1.0 in the CarDD config -> every branch weight is 1).  CarDD adds 3.0 x this
    term to the BCE loss for all 300 epochs.
    """
    model = getattr(model, "module", model)
    if not isinstance(model, CSNet):
        raise TypeError(f"csnet_dynamic_weight_decay needs a CSNet model, got {type(model).__name__}")
    e = float(flop_expand)
    stage_sizes = [model.stages[0] + 1] + list(model.stages[1:])
    base = e ** (len(model.stages) - 1)
    total = None
    bsz = batch_size
    blocks = model.il_blocks()
    bi = 0
    for n in stage_sizes:
        for _ in range(n):
            blk = blocks[bi]
            bi += 1
            for m in (blk.conv1x1, blk.conv3x3_1, blk.conv3x3_2):
                if m.activity is None:
                    raise RuntimeError("csnet_dynamic_weight_decay: no recorded activations; run a forward pass "
                                       "with the model in train mode first")
                nbr = len(m.activity)
                w = base * e ** (nbr - 1)
                for bn, act in zip(m.bns, m.activity):
                    if bn is not None and act is not None:
                        term = w * (act * bn.weight.float() ** 2).sum()
                        total = term if total is None else total + term
                        if bsz is None:
                            bsz = act.shape[0]
                    w = w / e
        base = base / e
    if total is None:
        raise RuntimeError("csnet_dynamic_weight_decay: the model has no block batch norms")
    return 0.5 * total / float(bsz)


def csnet_param_groups(model: nn.Module, lr: float = 1e-4, weight_decay: float = 5e-3) -> List[Dict]:
    """Adam parameter groups as the reference builds them ("Adam_dynamic_weight_decay"): the BN weights of each
    block's gOctConv (``conv1x1.bns``) and first depthwise conv (``conv3x3_1.bns``) get weight decay 0 (the
    reference's list names ``conv3x3_1`` twice, so ``conv3x3_2`` keeps the decay); everything else ``weight_decay``.
    Use with ``torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99), eps=1e-8)``."""
    normal, picked = [], []
    for name, p in model.named_parameters():
        if "stage" in name and ("conv1x1.bns" in name or "conv3x3_1.bns" in name) and "weight" in name:
            picked.append(p)
        else:
            normal.append(p)
    return [{"params": normal, "lr": lr, "weight_decay": weight_decay},
            {"params": picked, "lr": lr, "weight_decay": 0.0}]


SPEC = SODModelSpec(
    # 224x224 skimage resize (reflect, no anti-aliasing; the GT likewise, soft), RGB / 255, ImageNet mean/std;
    # train: on the original image cut 0-14 px top/left and 1-15 px bottom/right, flip p=0.5 (lr or ud)
    preprocess=PreprocessSpec(size=(224, 224), resize="skimage", skimage_mode="reflect", anti_aliasing=False,
                              label_resize="like_image", edge_crop=15, flip_lr_or_ud=0.5, save_rule="skimage_floor"),
    loss="csnet",
    output_kind="logits",
    output_names=("logits",),
    # train-mode BN needs batch * (H/16) * (W/16) > 1 (e.g. batch 2 at 16x16, or batch 1 at 32x16)
    min_input_size=16,
    size_divisor=16,
    param_groups=lambda model, weight_decay: csnet_param_groups(model, weight_decay=weight_decay),
)
