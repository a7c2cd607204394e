"""HTC's mask head: detectron2's conv-upsample mask head plus mmdet's mask information flow input.

mmdet 2.x ``HTCMaskHead`` is an ``FCNMaskHead`` (4 convs 3x3, 2x deconv, ReLU, 1x1 logits) that optionally takes
the feature of the previous stage's head (the output of its last 3x3 conv, before the deconv), passes it through a
1x1 conv + ReLU (``conv_res``, a ConvModule) and adds it to the ROI features before its own convs. The first stage
has no ``conv_res``.

Here the same layers are those of :class:`MaskRCNNConvUpsampleHead` (``mask_fcn1..4``, ``deconv``, ``predictor``)
plus ``conv_res`` (a detectron2 ``Conv2d`` with a ReLU activation) when ``with_conv_res`` is True.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
import fvcore.nn.weight_init as weight_init

__all__ = ["InfoFlowMaskHead"]


class InfoFlowMaskHead(MaskRCNNConvUpsampleHead):
    """Mask head that can add ReLU(1x1 conv(previous head's last conv feature)) to its input.

    Not registered in ``ROI_MASK_HEAD_REGISTRY``: :class:`cardd_d2.modeling.roi_heads.htc.HTCROIHeads` builds one per
    stage itself (stage 0 without ``conv_res``).
    """

    @configurable
    def __init__(self, input_shape, *, with_conv_res: bool = False, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.with_conv_res = with_conv_res
        if with_conv_res:
            feat_channels = self.conv_norm_relus[-1].out_channels if self.conv_norm_relus else input_shape.channels
            # Previous head's last conv feature -> this head's input channels (both 256 in mmdet).
            # Added after the Sequential's own layers; ``layers`` below does not iterate over the Sequential.
            self.conv_res = Conv2d(feat_channels, input_shape.channels, kernel_size=1, activation=nn.ReLU())
            weight_init.c2_msra_fill(self.conv_res)

    @classmethod
    def from_config(cls, cfg, input_shape, with_conv_res: bool = False):
        ret = super().from_config(cfg, input_shape)
        ret["with_conv_res"] = with_conv_res
        return ret

    def features(self, x: torch.Tensor, res_feat: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ROI features (+ information from the previous head) -> output of the last 3x3 conv."""
        if res_feat is not None:
            if not self.with_conv_res:
                raise ValueError("InfoFlowMaskHead: got a previous-stage feature but this head has no conv_res")
            x = x + self.conv_res(res_feat)
        for conv in self.conv_norm_relus:
            x = conv(x)
        return x

    def logits_from_features(self, feat: torch.Tensor) -> torch.Tensor:
        """Last conv feature -> mask logits (deconv, ReLU, 1x1 predictor)."""
        return self.predictor(self.deconv_relu(self.deconv(feat)))

    def forward_with_feat(
        self, x: torch.Tensor, res_feat: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(mask_logits, last_conv_feature)``."""
        feat = self.features(x, res_feat)
        return self.logits_from_features(feat), feat

    def layers(self, x):
        # Without information flow this is exactly MaskRCNNConvUpsampleHead.layers.
        return self.logits_from_features(self.features(x))
