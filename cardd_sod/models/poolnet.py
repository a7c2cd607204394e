"""PoolNet (ResNet-50, no edge branch; backseason/PoolNet as CarDD ran it), re-implemented.

* Backbone: caffe ResNet-50 with frozen BN (:mod:`.resnet_caffe`), output stride 16.
* Global guidance module (``base``): pyramid pooling on layer4 (1x1 2048->512 without activation; adaptive average
  pools 1, 3, 5 each + 1x1 + ReLU, upsampled back; concat; 3x3 -> 512 + ReLU) and four guidance flows
  (resize to the stride-16/16/8/4/2 maps + 3x3 -> 512/256/256/128 + ReLU).
* Lateral 1x1 + ReLU: [64, 256, 512, 1024, 2048] -> [128, 256, 256, 512, 512] (``convert``).
* Five feature aggregation modules (``deep_pool``): x + sum_{k=2,4,8} up(conv3x3(avgpool_k(x))), ReLU, resize to
  the next lateral map, conv3x3, then conv3x3(. + lateral + guidance) (the last module has no fuse / resize).
* ``score``: 1x1 -> one logit map, bilinear (align_corners=True) to the input size.

Input: full-resolution BGR image in 0-255 minus the caffe mean (104.00699, 116.66877, 122.67892), no std.
Test prediction: sigmoid of the logits.  Loss: BCE-with-logits summed over pixels / (iter_size 10 x batch);
gradients accumulated over ``SPEC.iter_size`` = 10 images (trainer's job).  The reference keeps the whole
network in eval mode (BN with global statistics); here the frozen BN does that regardless of ``train()``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..data.preprocess import CAFFE_BGR_MEAN, PreprocessSpec
from .layers import check_input, normal_conv_init_
from .backbone_weights import load_backbone_weights, resolve_backbone_weights
from .resnet_caffe import MIN_INPUT_STRIDE16, CaffeResNet50, stride16_size
from .spec import SODModelSpec

__all__ = ["PoolNet", "SPEC"]

SPEC = SODModelSpec(
    # full resolution, BGR 0-255 minus the caffe mean; train: horizontal flip
    preprocess=PreprocessSpec(size=None, hflip=0.5, color="bgr", scale="none", mean=CAFFE_BGR_MEAN,
                              std=(1.0, 1.0, 1.0), save_rule="cv2_round"),
    loss="poolnet",
    output_kind="logits",
    output_names=("logits",),
    iter_size=10,
    min_input_size=MIN_INPUT_STRIDE16,
    imagenet_backbone=True,
)

LATERAL_IN = (64, 256, 512, 1024, 2048)
LATERAL_OUT = (128, 256, 256, 512, 512)
GUIDE_OUT = (512, 256, 256, 128)
FAM_IN = (512, 512, 256, 256, 128)
FAM_OUT = (512, 256, 256, 128, 128)
FAM_RESIZE = (False, True, True, True, False)
FAM_FUSE = (True, True, True, True, False)


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ConvertLayer(nn.Module):
    """Lateral 1x1 conv + ReLU per backbone level."""

    def __init__(self, cin=LATERAL_IN, cout=LATERAL_OUT):
        super().__init__()
        self.convert0 = nn.ModuleList([nn.Sequential(nn.Conv2d(a, b, 1, bias=False), nn.ReLU(inplace=True))
                                       for a, b in zip(cin, cout)])

    def forward(self, feats):
        return [m(f) for m, f in zip(self.convert0, feats)]


class GuidedResNet(nn.Module):
    """Backbone + global guidance module (reference ``ResNet_locate``)."""

    def __init__(self, width: int = 512, pools=(1, 3, 5), guide_out=GUIDE_OUT):
        super().__init__()
        self.resnet = CaffeResNet50()
        self.ppms_pre = nn.Conv2d(2048, width, 1, bias=False)
        self.ppms = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(p), nn.Conv2d(width, width, 1, bias=False),
                                                 nn.ReLU(inplace=True)) for p in pools])
        self.ppm_cat = nn.Sequential(nn.Conv2d(width * (len(pools) + 1), width, 3, padding=1, bias=False),
                                     nn.ReLU(inplace=True))
        self.infos = nn.ModuleList([nn.Sequential(nn.Conv2d(width, c, 3, padding=1, bias=False),
                                                  nn.ReLU(inplace=True)) for c in guide_out])

    def forward(self, x):
        feats = self.resnet(x)
        top = self.ppms_pre(feats[-1])
        size = top.shape[2:]
        pyramid = [top] + [_up(m(top), size) for m in self.ppms]
        glob = self.ppm_cat(torch.cat(pyramid, dim=1))
        n = len(self.infos)
        guides = [m(_up(glob, feats[n - 1 - k].shape[2:])) for k, m in enumerate(self.infos)]
        return feats, guides


class DeepPoolLayer(nn.Module):
    """Feature aggregation module with parallel 2/4/8 average pools."""

    def __init__(self, k: int, k_out: int, need_x2: bool, need_fuse: bool, pool_sizes=(2, 4, 8)):
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        self.need_x2 = need_x2
        self.need_fuse = need_fuse
        self.pools = nn.ModuleList([nn.AvgPool2d(p, p) for p in self.pool_sizes])
        self.convs = nn.ModuleList([nn.Conv2d(k, k, 3, padding=1, bias=False) for _ in self.pool_sizes])
        self.relu = nn.ReLU()
        self.conv_sum = nn.Conv2d(k, k_out, 3, padding=1, bias=False)
        if need_fuse:
            self.conv_sum_c = nn.Conv2d(k_out, k_out, 3, padding=1, bias=False)

    def forward(self, x, x2=None, x3=None):
        size = x.shape[2:]
        out = x
        for pool, conv in zip(self.pools, self.convs):
            out = out + _up(conv(pool(x)), size)
        out = self.relu(out)
        if self.need_x2:
            out = _up(out, x2.shape[2:])
        out = self.conv_sum(out)
        if self.need_fuse:
            out = self.conv_sum_c(out + x2 + x3)
        return out


class ScoreLayer(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.score = nn.Conv2d(k, 1, 1)

    def forward(self, x, size=None):
        x = self.score(x)
        return x if size is None else _up(x, size)


class PoolNet(nn.Module):
    """PoolNet-R50; ``forward(x)`` -> logits [B, 1, H, W]."""


    def __init__(self, backbone_weights: Optional[str] = None):
        super().__init__()
        path = resolve_backbone_weights(backbone_weights) if backbone_weights else None  # before the slow build
        self.base = GuidedResNet()
        self.convert = ConvertLayer()
        self.deep_pool = nn.ModuleList([DeepPoolLayer(*a) for a in zip(FAM_IN, FAM_OUT, FAM_RESIZE, FAM_FUSE)])
        self.score = ScoreLayer(FAM_OUT[-1])
        normal_conv_init_(self)
        self.backbone_report = load_backbone_weights(self.base.resnet, path) if path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "PoolNet", SPEC.min_input_size, size_ok=lambda s: stride16_size(s) >= 8)
        feats, guides = self.base(x)
        lat = self.convert(feats)[::-1]
        merge = self.deep_pool[0](lat[0], lat[1], guides[0])
        for k in range(1, len(lat) - 1):
            merge = self.deep_pool[k](merge, lat[k + 1], guides[k])
        merge = self.deep_pool[-1](merge)
        return self.score(merge, x.shape[2:])

    @staticmethod
    def saliency(outputs: torch.Tensor) -> torch.Tensor:
        """Test-time prediction: sigmoid of the logits, [B, 1, H, W]."""
        return torch.sigmoid(outputs)
