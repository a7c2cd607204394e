"""GCNet global context block with mmcv's ``ContextBlock`` semantics and parameter names.

Only the configuration GCNet's released configs use is implemented: pooling 'att' and fusion 'channel_add'.

* context modelling: ``conv_mask`` (1x1 conv C->1) gives one logit per position, softmax over the H*W positions,
  the context vector is the softmax-weighted sum of the input features (C values per image);
* transform: ``channel_add_conv`` = 1x1 conv C->C*ratio, LayerNorm over (C*ratio, 1, 1), ReLU, 1x1 conv ->C;
  the last conv starts at zero (weight and bias), so a fresh block is the identity;
* fusion: the transformed context is broadcast-added to every position of the input.

Parameter names (``conv_mask.*``, ``channel_add_conv.{0,1,3}.*``) equal mmcv's, so mmdet GCNet checkpoints map
one to one (the bottleneck registers the block as ``context_block``, mmdet's plugin name).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ContextBlock"]


class ContextBlock(nn.Module):
    def __init__(self, in_channels: int, ratio: float = 1.0 / 4):
        super().__init__()
        hidden = int(in_channels * ratio)
        if hidden < 1:
            raise ValueError(f"ContextBlock: in_channels={in_channels} * ratio={ratio} leaves no hidden channels")
        self.in_channels = in_channels
        self.ratio = ratio
        self.planes = hidden
        self.conv_mask = nn.Conv2d(in_channels, 1, kernel_size=1)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, in_channels, kernel_size=1),
        )
        self.reset_parameters()

    def reset_parameters(self):
        # mmcv: kaiming (fan_in) for the attention conv, zero for the last transform conv.
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        last = self.channel_add_conv[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 1, 1) attention-pooled context of ``x``."""
        n, c, h, w = x.shape
        logits = self.conv_mask(x).reshape(n, 1, h * w)
        attn = torch.softmax(logits, dim=2)  # (N, 1, HW)
        # mmcv's operand layout, (N, 1, C, HW) @ (N, 1, HW, 1): the same sum as a bmm, but another kernel with
        # another rounding; this one reproduces the released model bit for bit
        feats = x.reshape(n, c, h * w).unsqueeze(1)
        pooled = torch.matmul(feats, attn.unsqueeze(-1).to(feats.dtype))  # (N, 1, C, 1)
        return pooled.reshape(n, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        term = self.channel_add_conv(self.context(x))
        return x + term.to(x.dtype)

    def extra_repr(self):
        return f"in_channels={self.in_channels}, ratio={self.ratio}, pooling='att', fusion='channel_add'"
