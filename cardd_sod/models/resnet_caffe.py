"""Caffe-style ResNet-50 as PoolNet / SGL-KRN use it ("deeplab_resnet" of the references), re-implemented.

* stride on the first 1x1 conv of a bottleneck (caffe convention), not on the 3x3;
* 7x7/2 stem, 3x3/2 max pool with ``ceil_mode=True``;
* layer4 with stride 1 and dilation 2 (output stride 16); every stage has a projection shortcut;
* all batch norms frozen (:class:`~cardd_sod.models.layers.FrozenBatchNorm2d`): running statistics, no training;
* ``forward`` returns the five feature maps [stem(64, /2), layer1(256, /4), layer2(512, /8), layer3(1024, /16),
  layer4(2048, /16)].

Module names match the reference (``conv1``, ``bn1``, ``layerN.M.convK``, ``layerN.M.downsample.0/1``) so a
caffe ResNet-50 state dict (e.g. PoolNet's ``resnet50_caffe.pth``) loads with :func:`load_backbone_weights`.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List

import torch
from torch import nn

from .layers import FrozenBatchNorm2d

__all__ = ["CaffeResNet50", "load_backbone_weights", "check_backbone_path", "stride16_size", "MIN_INPUT_STRIDE16"]


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

_PREFIXES = ("module.", "base.resnet.", "resnet.", "backbone.")


def check_backbone_path(path) -> None:
    """Raise ``FileNotFoundError`` if ``path`` is given but is not an existing file."""
    if path and not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"backbone weights file not found: {os.fspath(path)}")


def load_backbone_weights(resnet: CaffeResNet50, path: str) -> Dict[str, List[str]]:
    """Load a caffe ResNet-50 state dict from ``path`` into ``resnet`` (strictly).

    Accepts a plain state dict or one wrapped in ``{"state_dict": ...}`` / ``{"model": ...}``; key prefixes
    ``module.``, ``base.resnet.``, ``resnet.``, ``backbone.`` are stripped; ``fc.*`` keys (classifier) and missing
    ``num_batches_tracked`` buffers are ignored.  Any other missing / unexpected key or shape mismatch raises
    ``ValueError`` naming the file.  Returns ``{"ignored": [...]}``.
    """
    path = os.fspath(path)
    check_backbone_path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"backbone weights file {path} could not be read as a torch state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"backbone weights file {path} does not contain a state dict of tensors")
    sd = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        sd[k] = v
    ignored = sorted(k for k in sd if k.startswith("fc."))
    for k in ignored:
        sd.pop(k)
    expected = resnet.state_dict()
    missing = sorted(k for k in expected if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in expected)
    bad_shape = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                       for k in sd if k in expected and sd[k].shape != expected[k].shape)
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]})")
        if bad_shape:
            parts.append(f"{len(bad_shape)} shape mismatches (e.g. {bad_shape[:3]})")
        raise ValueError(f"backbone weights file {path} does not match the caffe ResNet-50: " + "; ".join(parts))
    resnet.load_state_dict(sd, strict=False)
    return {"ignored": ignored}
