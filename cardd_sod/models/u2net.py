"""U^2-Net and U^2-Net-p (xuebinqin/U-2-Net), re-implemented.

* ReSidual U-blocks RSU-L (L = 7, 6, 5, 4): an input conv, an L-level U-Net of conv-BN-ReLU layers with
  ceil-mode 2x2 max pools (the innermost layer dilated by 2), bilinear upsampling in the decoder, and a residual
  connection to the input conv's output.  RSU-4F replaces pooling by dilations 1, 2, 4, 8.
* Encoder RSU-7/6/5/4/4F/4F with ceil-mode pools between stages, mirrored decoder (4F/4/5/6/7), a 3x3 side conv
  per decoder stage (and on the last encoder stage), all upsampled to the input size, and a 1x1 fuse conv.
* ``forward`` returns 7 sigmoid maps (d0 fused, d1..d6 side), each [B, 1, H, W].
* Test prediction: d0 min-max normalised per image.

Input: image resized to 320x320 (aspect not kept), divided by its max, then ImageNet mean/std (RGB).  Training:
random 288x288 crop and vertical flip.  Loss: sum of the 7 BCE (mean) terms.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..data.preprocess import PreprocessSpec
from .layers import check_input
from .spec import SODModelSpec

__all__ = ["U2Net", "RSU", "U2NET_CONFIGS", "SPEC"]

OUTPUT_NAMES = ("d0", "d1", "d2", "d3", "d4", "d5", "d6")

SPEC = SODModelSpec(
    # 320x320 (aspect not kept), image / max then ImageNet mean/std; train: random crop 288, vertical flip;
    # nearest-resized GT / max
    preprocess=PreprocessSpec(size=(320, 320), resize="skimage", label_resize="nearest", crop=(288, 288),
                              vflip=0.5, scale="max", label_scale="max", save_rule="minmax_pil"),
    loss="u2net",
    output_kind="sigmoid",
    output_names=OUTPUT_NAMES,
    # train-mode BN needs batch * ceil(H/32) * ceil(W/32) > 1
)

# (kind, in, mid, out) per stage; kind = depth L of the RSU block or "4F".
U2NET_CONFIGS = {
    "u2net": {
        "encoder": [(7, 3, 32, 64), (6, 64, 32, 128), (5, 128, 64, 256), (4, 256, 128, 512), ("4F", 512, 256, 512),
                    ("4F", 512, 256, 512)],
        "decoder": [("4F", 1024, 256, 512), (4, 1024, 128, 256), (5, 512, 64, 128), (6, 256, 32, 64),
                    (7, 128, 16, 64)],
        "side": [64, 64, 128, 256, 512, 512],
    },
    "u2netp": {
        "encoder": [(7, 3, 16, 64), (6, 64, 16, 64), (5, 64, 16, 64), (4, 64, 16, 64), ("4F", 64, 16, 64),
                    ("4F", 64, 16, 64)],
        "decoder": [("4F", 128, 16, 64), (4, 128, 16, 64), (5, 128, 16, 64), (6, 128, 16, 64), (7, 128, 16, 64)],
        "side": [64, 64, 64, 64, 64, 64],
    },
}


def _up_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


class REBNCONV(nn.Module):
    """3x3 conv (dilated) + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block of depth ``depth`` (RSU-7 ... RSU-4) or, with ``dilated=True``, RSU-4F.

    Layers are named like the reference (``rebnconvin``, ``rebnconv1..depth``, ``rebnconv{depth-1..1}d``,
    ``pool1..``) so U^2-Net checkpoints load unchanged.
    """

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool = False):
        super().__init__()
        self.depth = depth
        self.dilated = dilated
        enc_dil = [2 ** i if dilated else 1 for i in range(depth)]       # rebnconv1..depth
        if not dilated:
            enc_dil[-1] = 2
        self._enc_dil = enc_dil
        self.rebnconvin = REBNCONV(in_ch, out_ch, 1)
        for i in range(1, depth + 1):
            setattr(self, f"rebnconv{i}", REBNCONV(out_ch if i == 1 else mid_ch, mid_ch, enc_dil[i - 1]))
            if not dilated and i <= depth - 2:
                setattr(self, f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        for i in range(depth - 1, 0, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(2 * mid_ch, out_ch if i == 1 else mid_ch,
                                                    enc_dil[i - 1] if dilated else 1))

    def forward(self, x):
        hxin = self.rebnconvin(x)
        feats = []
        t = hxin
        for i in range(1, self.depth):
            h = getattr(self, f"rebnconv{i}")(t)
            feats.append(h)
            t = getattr(self, f"pool{i}")(h) if (not self.dilated and i <= self.depth - 2) else h
        d = getattr(self, f"rebnconv{self.depth}")(t)
        for i in range(self.depth - 1, 0, -1):
            skip = feats[i - 1]
            if d.shape[2:] != skip.shape[2:]:
                d = _up_like(d, skip)
            d = getattr(self, f"rebnconv{i}d")(torch.cat((d, skip), dim=1))
        return d + hxin


def _make_rsu(kind: Union[int, str], in_ch: int, mid_ch: int, out_ch: int) -> RSU:
    if kind == "4F":
        return RSU(4, in_ch, mid_ch, out_ch, dilated=True)
    return RSU(int(kind), in_ch, mid_ch, out_ch)


class U2Net(nn.Module):
    """U^2-Net (``variant="u2net"``) or U^2-Net-p (``variant="u2netp"``); ``forward`` -> 7 sigmoid maps."""

    OUTPUT_NAMES = OUTPUT_NAMES

    def __init__(self, variant: str = "u2net", in_ch: int = 3, out_ch: int = 1):
        super().__init__()
        if variant not in U2NET_CONFIGS:
            raise ValueError(f"U2Net: unknown variant {variant!r}; known: {sorted(U2NET_CONFIGS)}")
        self.variant = variant
        cfg = U2NET_CONFIGS[variant]
        enc = list(cfg["encoder"])
        enc[0] = (enc[0][0], in_ch, enc[0][2], enc[0][3])
        n = len(enc)
        for i, c in enumerate(enc, start=1):
            setattr(self, f"stage{i}", _make_rsu(*c))
            if i < n:
                setattr(self, f"pool{i}{i + 1}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        for i, c in zip(range(n - 1, 0, -1), cfg["decoder"]):
            setattr(self, f"stage{i}d", _make_rsu(*c))
        for i, c in enumerate(cfg["side"], start=1):
            setattr(self, f"side{i}", nn.Conv2d(c, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(n * out_ch, out_ch, 1)
        self._n = n

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_input(x, "U2-Net" if self.variant == "u2net" else "U2-Netp", SPEC.min_input_size)
        n = self._n
        enc = []
        t = x
        for i in range(1, n + 1):
            h = getattr(self, f"stage{i}")(t)
            enc.append(h)
            if i < n:
                t = getattr(self, f"pool{i}{i + 1}")(h)
        dec = [None] * (n + 1)
        dec[n] = enc[-1]
        d = enc[-1]
        for i in range(n - 1, 0, -1):
            d = getattr(self, f"stage{i}d")(torch.cat((_up_like(d, enc[i - 1]), enc[i - 1]), dim=1))
            dec[i] = d
        s1 = self.side1(dec[1])
        sides = [s1] + [_up_like(getattr(self, f"side{i}")(dec[i]), s1) for i in range(2, n + 1)]
        d0 = self.outconv(torch.cat(sides, dim=1))
        return tuple(torch.sigmoid(t) for t in [d0] + sides)

    @staticmethod
    def saliency(outputs) -> torch.Tensor:
        """Test-time prediction: d0 min-max normalised per image, [B, 1, H, W] in [0, 1].

        (A constant map gives 0 here; the reference's normPRED would divide by zero.)"""
        d0 = outputs[0]
        flat = d0.flatten(1)
        lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
        hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
        return (d0 - lo) / (hi - lo).clamp_min(torch.finfo(d0.dtype).tiny)


def build_u2net(**kwargs) -> U2Net:
    return U2Net("u2net", **kwargs)


def build_u2netp(**kwargs) -> U2Net:
    return U2Net("u2netp", **kwargs)
