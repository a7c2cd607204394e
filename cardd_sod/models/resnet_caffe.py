"""Caffe-style ResNet-50 as PoolNet / SGL-KRN use it ("deeplab_resnet" of the references), re-implemented.

* stride on the first 1x1 conv of a bottleneck (caffe convention), not on the 3x3;
* 7x7/2 stem, 3x3/2 max pool with ``ceil_mode=True``;
* layer4 with stride 1 and dilation 2 (output stride 16); every stage has a projection shortcut;
* all batch norms frozen (:class:`~cardd_sod.models.layers.FrozenBatchNorm2d`): running statistics, no training;
* ``forward`` returns the five feature maps [stem(64, /2), layer1(256, /4), layer2(512, /8), layer3(1024, /16),
  layer4(2048, /16)].

Module names match the reference (``conv1``, ``bn1``, ``layerN.M.convK``, ``layerN.M.downsample.0/1``); ImageNet
weights (the MSRA ``R-50.pkl`` or PoolNet's ``resnet50_caffe.pth``) load with
:func:`cardd_sod.models.backbone_weights.load_backbone_weights`.
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from .layers import FrozenBatchNorm2d

__all__ = ["CaffeResNet50", "stride16_size", "MIN_INPUT_STRIDE16"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CaffeResNet50(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self._inplanes = 64
        self.layer1 = self._stage(64, layers[0])
        self.layer2 = self._stage(128, layers[1], stride=2)
        self.layer3 = self._stage(256, layers[2], stride=2)
        self.layer4 = self._stage(512, layers[3], stride=1, dilation=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)

    def _stage(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(self._inplanes, planes * 4, 1, stride=stride, bias=False),
                             FrozenBatchNorm2d(planes * 4))
        mods = [Bottleneck(self._inplanes, planes, stride, dilation, down)]
        self._inplanes = planes * 4
        mods += [Bottleneck(self._inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x) -> List[torch.Tensor]:
        c0 = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(c0))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c0, c1, c2, c3, c4]


def stride16_size(s: int) -> int:
    """Spatial size of layer3 / layer4 of :class:`CaffeResNet50` for an input side of ``s`` pixels."""
    s = (s + 2 * 3 - 7) // 2 + 1                   # conv1 7x7/2 pad 3
    s = math.ceil((s + 2 * 1 - 3) / 2) + 1         # max pool 3x3/2 pad 1, ceil mode
    s = (s - 1) // 2 + 1                           # layer2 1x1/2
    s = (s - 1) // 2 + 1                           # layer3 1x1/2
    return s


# The deep-pool layers of PoolNet (8x8 average pool) and SGL-KRN (three cascaded 2x2 pools) need the stride-16
# map to be at least 8 px: the smallest such input side is 111.
MIN_INPUT_STRIDE16 = min(s for s in range(1, 1000) if stride16_size(s) >= 8)
