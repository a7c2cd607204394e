"""FastRCNNOutputLayers whose classification loss can be DCN+'s focal loss (see ``cardd_d2.modeling.losses``).

Only the training classification loss and the box decoding change (boxes decode as in mmdetection, see
``cardd_d2.modeling.box_regression``); the layers, the box regression loss and the softmax over the K+1 logits at
inference are detectron2's.
"""
from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

from ..box_regression import MMDetBox2BoxTransform
from ..losses import FOCAL_VARIANTS, ROI_CLS_LOSS_TYPES, roi_cls_loss

__all__ = ["FocalFastRCNNOutputLayers", "roi_cls_loss_kwargs_from_cfg"]


def roi_cls_loss_kwargs_from_cfg(cfg) -> dict:
    """``roi_cls_loss`` keyword arguments from MODEL.ROI_BOX_HEAD.{CLS_LOSS_TYPE, FOCAL_VARIANT, FOCAL_ALPHA,
    FOCAL_GAMMA} (for any box predictor that wants the same loss, e.g. cascade stages)."""
    head = cfg.MODEL.ROI_BOX_HEAD
    return {
        "loss_type": head.CLS_LOSS_TYPE,
        "variant": head.FOCAL_VARIANT,
        "alpha": float(head.FOCAL_ALPHA),
        "gamma": float(head.FOCAL_GAMMA),
    }


class FocalFastRCNNOutputLayers(FastRCNNOutputLayers):
    """detectron2's box predictor with a configurable classification loss.

    Extra arguments (all other arguments are FastRCNNOutputLayers'):
        cls_loss_type: "ce" (detectron2's loss, unchanged) or "focal".
        focal_variant: "mmdet_sigmoid" (released DCN+) or "softmax" (paper Eq. (1)).
        focal_alpha, focal_gamma: focal parameters.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        cls_loss_type: str = "ce",
        focal_variant: str = "mmdet_sigmoid",
        focal_alpha: float = 0.5,
        focal_gamma: float = 2.0,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        if cls_loss_type not in ROI_CLS_LOSS_TYPES:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE: unknown value {cls_loss_type!r}; "
                f"expected one of {ROI_CLS_LOSS_TYPES}"
            )
        if focal_variant not in FOCAL_VARIANTS:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.FOCAL_VARIANT: unknown value {focal_variant!r}; expected one of {FOCAL_VARIANTS}"
            )
        if focal_gamma < 0:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.FOCAL_GAMMA must be >= 0, got {focal_gamma}")
        if cls_loss_type == "focal" and self.use_sigmoid_ce:
            raise ValueError(
                "MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE 'focal' cannot be combined with USE_SIGMOID_CE / USE_FED_LOSS "
                "(the focal head keeps K+1 logits and softmax scores at inference)"
            )
        self.cls_loss_type = cls_loss_type
        self.focal_variant = focal_variant
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["box2box_transform"] = MMDetBox2BoxTransform(weights=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
        kw = roi_cls_loss_kwargs_from_cfg(cfg)
        ret.update(
            cls_loss_type=kw["loss_type"],
            focal_variant=kw["variant"],
            focal_alpha=kw["alpha"],
            focal_gamma=kw["gamma"],
        )
        return ret

    def cls_loss(self, scores: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        """The classification loss alone (before ``loss_weight``)."""
        return roi_cls_loss(
            scores,
            gt_classes,
            loss_type=self.cls_loss_type,
            variant=self.focal_variant,
            alpha=self.focal_alpha,
            gamma=self.focal_gamma,
        )

    def losses(self, predictions, proposals):
        losses = super().losses(predictions, proposals)
        if self.cls_loss_type == "ce":
            return losses
        scores, _ = predictions
        if len(proposals):
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        else:
            gt_classes = torch.empty(0, dtype=torch.long, device=scores.device)
        losses["loss_cls"] = self.cls_loss(scores, gt_classes) * self.loss_weight.get("loss_cls", 1.0)
        return losses

    def extra_repr(self) -> str:
        return (
            f"cls_loss_type={self.cls_loss_type}, focal_variant={self.focal_variant}, "
            f"focal_alpha={self.focal_alpha}, focal_gamma={self.focal_gamma}"
        )
