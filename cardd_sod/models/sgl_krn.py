"""SGL-KRN (class ``KRN_edge`` of the "Locate Globally, Segment Locally" release), re-implemented.

Only the parts that take part in the output are built (55,795,274 parameters, 53,120 of them frozen BN).  The
reference additionally registers PoolNet's pyramid pooling / guidance flows (computed, never used), a contour
deep-pool stack and two score heads (``score``, ``score_contour``) that never receive gradient (98,770,764
registered parameters); :meth:`SGLKRN.filter_reference_state_dict` drops those keys from a reference checkpoint.

* Backbone: PoolNet's caffe ResNet-50 (frozen BN) and lateral layers ``convert`` ([128,256,256,512,512]).
  Lateral maps reversed: l0 = layer4 (512), l1 = layer3 (512), l2 = layer2 (256), l3 = layer1 (256), l4 = stem (128).
* Solid branch: ``DeepPool_solid1..5``: x + sum of up(conv(pool2(...))) over three CASCADED 2x2 average pools,
  ReLU, resize to the next lateral map, conv3x3, then conv3x3(. + lateral) (no guidance); solid1 takes (l0, l1),
  solid k takes (solid k-1, l_k); solid5 has no fuse.
* Contour branch: ``conv_k`` 3x3 on l_k (k = 1..4) -> ``score_contour_k``.
* Knowledge review: ``conv_reduce1..3`` = ReLU(1x1 conv with padding 1) on solid1..3 (maps grow by 2 px), solid4
  as is; each resized to solid5's (stride 2) map, added to it, ``conv_add_k`` 3x3 -> 32 + ReLU; the four maps are
  concatenated -> ``conv_sum_out`` 3x3 (128) -> ``score_sum_out`` -> bilinear to the input.

``forward`` returns 10 sigmoid maps at input size: (final, merged solid, solid1, contour1, solid2, contour2,
solid3, contour3, solid4, contour4).  Test prediction: the final map.  Input as PoolNet (BGR - caffe mean).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..data.preprocess import CAFFE_BGR_MEAN, PreprocessSpec
from .layers import check_input, normal_conv_init_
from .poolnet import ConvertLayer, ScoreLayer
from .backbone_weights import load_backbone_weights, resolve_backbone_weights
from .resnet_caffe import MIN_INPUT_STRIDE16, CaffeResNet50, stride16_size
from .spec import SODModelSpec

__all__ = ["SGLKRN", "SPEC", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("final", "solid", "solid1", "contour1", "solid2", "contour2", "solid3", "contour3", "solid4",
                "contour4")

SPEC = SODModelSpec(
    # as PoolNet, plus edge maps and, with p=0.5, rotation by an integer angle in [-25, 25) after the mean
    # subtraction (the release's augmentation); training in the sorted file order
    preprocess=PreprocessSpec(size=None, hflip=0.5, color="bgr", scale="none", mean=CAFFE_BGR_MEAN,
                              std=(1.0, 1.0, 1.0), edges=True, rotate_deg=25, rotate_p=0.5,
                              save_rule="cv2_round"),
    loss="sgl_krn",
    output_kind="sigmoid",
    output_names=OUTPUT_NAMES,
    iter_size=10,
    shuffle=False,
    min_input_size=MIN_INPUT_STRIDE16,
    imagenet_backbone=True,
)

# Reference-checkpoint keys of modules that never contribute to the outputs.
UNUSED_REFERENCE_PREFIXES = ("base.ppms_pre.", "base.ppms.", "base.ppm_cat.", "base.infos.", "DeepPool_contour",
                             "score.", "score_contour.")


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class CascadePoolLayer(nn.Module):
    """Deep-pool layer with three cascaded 2x2 average pools (reference ``DeepPoolLayer_first``)."""

    def __init__(self, k: int, k_out: int, need_x2: bool, need_fuse: bool, levels: int = 3):
        super().__init__()
        self.need_x2 = need_x2
        self.need_fuse = need_fuse
        self.pools = nn.ModuleList([nn.AvgPool2d(2, 2) for _ in range(levels)])
        self.convs = nn.ModuleList([nn.Conv2d(k, k, 3, padding=1, bias=False) for _ in range(levels)])
        self.relu = nn.ReLU()
        self.conv_sum = nn.Conv2d(k, k_out, 3, padding=1, bias=False)
        if need_fuse:
            self.conv_sum_c = nn.Conv2d(k_out, k_out, 3, padding=1, bias=False)

    def forward(self, x, x2=None):
        size = x.shape[2:]
        out, y = x, x
        for pool, conv in zip(self.pools, self.convs):
            y = conv(pool(y))
            out = out + _up(y, size)
        out = self.relu(out)
        if self.need_x2:
            out = _up(out, x2.shape[2:])
        out = self.conv_sum(out)
        if self.need_fuse:
            out = self.conv_sum_c(out + x2)
        return out


class _Backbone(nn.Module):
    """Holds the ResNet under the reference's ``base.resnet`` name."""

    def __init__(self):
        super().__init__()
        self.resnet = CaffeResNet50()

    def forward(self, x):
        return self.resnet(x)


class SGLKRN(nn.Module):
    """SGL-KRN (ResNet-50); ``forward(x)`` -> tuple of 10 sigmoid maps (see :data:`OUTPUT_NAMES`)."""

    OUTPUT_NAMES = OUTPUT_NAMES

    def __init__(self, backbone_weights: Optional[str] = None):
        super().__init__()
        path = resolve_backbone_weights(backbone_weights) if backbone_weights else None  # before the slow build
        self.base = _Backbone()
        self.convert = ConvertLayer()
        self.DeepPool_solid1 = CascadePoolLayer(512, 512, False, True)
        self.DeepPool_solid2 = CascadePoolLayer(512, 256, True, True)
        self.DeepPool_solid3 = CascadePoolLayer(256, 256, True, True)
        self.DeepPool_solid4 = CascadePoolLayer(256, 128, True, True)
        self.DeepPool_solid5 = CascadePoolLayer(128, 128, False, False)
        self.relu = nn.ReLU()
        self.conv_reduce1 = nn.Conv2d(512, 128, 1, 1, 1, bias=False)
        self.conv_reduce2 = nn.Conv2d(256, 128, 1, 1, 1, bias=False)
        self.conv_reduce3 = nn.Conv2d(256, 128, 1, 1, 1, bias=False)
        for k, c in enumerate((512, 256, 256, 128), start=1):
            setattr(self, f"score_solid{k}", ScoreLayer(c))
            setattr(self, f"score_contour{k}", ScoreLayer(c))
            setattr(self, f"conv_{k}", nn.Conv2d(c, c, 3, 1, 1, bias=False))
            setattr(self, f"conv_add{k}", nn.Conv2d(128, 32, 3, 1, 1, bias=False))
        self.score_solid = ScoreLayer(128)
        self.score_sum_out = ScoreLayer(128)
        self.conv_sum_out = nn.Conv2d(128, 128, 3, 1, 1, bias=False)
        normal_conv_init_(self)
        self.backbone_report = load_backbone_weights(self.base.resnet, path) if path else None

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_input(x, "SGL-KRN", SPEC.min_input_size, size_ok=lambda s: stride16_size(s) >= 8)
        size = x.shape[2:]
        lat = self.convert(self.base(x))[::-1]
        side_outs, reduced = [], []
        prev = lat[0]
        for k in range(1, 5):
            solid = getattr(self, f"DeepPool_solid{k}")(prev, lat[k])
            contour = getattr(self, f"conv_{k}")(lat[k])
            side_outs.append(torch.sigmoid(getattr(self, f"score_solid{k}")(solid, size)))
            side_outs.append(torch.sigmoid(getattr(self, f"score_contour{k}")(contour, size)))
            reduced.append(self.relu(getattr(self, f"conv_reduce{k}")(solid)) if k < 4 else solid)
            prev = solid
        solid5 = self.DeepPool_solid5(prev)
        merged_solid = torch.sigmoid(self.score_solid(solid5, size))
        s5 = solid5.shape[2:]
        review = [self.relu(getattr(self, f"conv_add{k}")(solid5 + _up(r, s5)))
                  for k, r in enumerate(reduced, start=1)]
        final = self.score_sum_out(self.conv_sum_out(torch.cat(review, dim=1)), size)
        return (torch.sigmoid(final), merged_solid, *side_outs)

    @staticmethod
    def saliency(outputs) -> torch.Tensor:
        """Test-time prediction: the final sigmoid map, [B, 1, H, W]."""
        return outputs[0]

    @staticmethod
    def filter_reference_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Drop the keys of the reference's unused modules (see module docstring) and a ``module.`` prefix."""
        out = {}
        for k, v in state_dict.items():
            k = k[len("module."):] if k.startswith("module.") else k
            if not k.startswith(UNUSED_REFERENCE_PREFIXES):
                out[k] = v
        return out
