"""A tiny stand-in SOD model with the model package's interface, for smoke tests and tiny CLI runs.

``MODEL.NAME: tiny`` selects it in :class:`cardd_sod.engine.SODTrainer` (preprocessing preset from INPUT.PRESET,
default ``csnet``).  Interface: ``forward(x) -> logits [B,1,H,W]``, ``saliency(outputs) -> [B,1,H,W] in [0,1]``;
``tiny_sod_loss(outputs, target, edge=None) -> (loss, terms)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TinySODNet", "tiny_sod_loss"]


class TinySODNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.bn(self.conv1(x))))

    @staticmethod
    def saliency(outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs)


def tiny_sod_loss(outputs: torch.Tensor, target: torch.Tensor, edge=None):
    bce = F.binary_cross_entropy_with_logits(outputs, target)
    return bce, {"bce": bce.detach()}
