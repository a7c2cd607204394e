"""Hybrid Task Cascade ROI heads (mmdet 2.x ``HybridTaskCascadeRoIHead``), without the semantic branch by default.

Read from mmdet 2.25 ``mmdet/models/roi_heads/htc_roi_head.py`` and ``mask_heads/htc_mask_head.py``:

* Box branch: the mmdet-style cascade of :class:`MMDetCascadeROIHeads` (per-stage assign + sample, stage loss
  weights 1 / 0.5 / 0.25, refinement without gradient dropping gt ROIs).
* Interleaved execution (``interleaved=True``): after stage ``t``'s box loss, the sampled ROIs are refined by stage
  ``t`` (no gradient), re-assigned and re-sampled with stage ``t``'s assigner / sampler ("re-assign and sample 512
  RoIs from 512 RoIs"), mask head ``t`` is trained on those positives, and the refined ROIs feed stage ``t + 1``.
  With ``interleaved=False`` mask head ``t`` trains on the positives of stage ``t``'s box sample, as in Cascade.
* Mask information flow (``mask_info_flow=True``): for stage ``t`` the heads ``0 .. t-1`` run in a chain on the
  same pooled ROI features (``last_feat = mask_head[i](feats, last_feat, return_logits=False)``) and head ``t``
  adds ``ReLU(conv1x1(last_feat))`` to its input. Gradients flow into the earlier heads (mmdet does not detach).
* Test: box cascade with the mean of logits (as Cascade), then on the final detections all mask heads run in the
  information-flow chain and their sigmoid masks are averaged.
* The mask loss of stage ``t`` is weighted by the stage loss weight, like the box losses.

Switches: ``MODEL.HTC.INTERLEAVED``, ``MODEL.HTC.MASK_INFO_FLOW``. ``MODEL.HTC.WITH_SEMANTIC`` (the
FusedSemanticHead, which needs stuff segmentation maps that CarDD does not have) is not implemented and raises.
With both switches off the model is the mmdet-style cascade (same weights -> same outputs).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY

from .cascade_mmdet import MMDetCascadeROIHeads
from .htc_mask_head import InfoFlowMaskHead

__all__ = ["HTCROIHeads"]


@ROI_HEADS_REGISTRY.register()
class HTCROIHeads(MMDetCascadeROIHeads):
    """HTC ROI heads: interleaved box/mask cascade with mask information flow (no semantic branch).

    ``self.mask_head[t]`` is an :class:`InfoFlowMaskHead`; heads ``t >= 1`` own ``conv_res`` (the information-flow
    1x1 conv) when ``MODEL.HTC.MASK_INFO_FLOW`` is on.
    """

    @configurable
    def __init__(self, *, interleaved: bool = True, mask_info_flow: bool = True, with_semantic: bool = False, **kwargs):
        if with_semantic:
            raise NotImplementedError(
                "MODEL.HTC.WITH_SEMANTIC=True: HTC's semantic branch (FusedSemanticHead) is not implemented; it needs "
                "stuff segmentation maps, which CarDD does not provide (the released CarDD HTC runs without it). "
                "Set MODEL.HTC.WITH_SEMANTIC False."
            )
        super().__init__(**kwargs)
        self.interleaved = bool(interleaved)
        self.mask_info_flow = bool(mask_info_flow)
        if self.mask_on and self.mask_info_flow:
            for t, head in enumerate(self.mask_head):
                if t > 0 and not getattr(head, "with_conv_res", False):
                    raise ValueError(f"HTCROIHeads: mask head {t} lacks conv_res needed by MODEL.HTC.MASK_INFO_FLOW")

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(
            interleaved=cfg.MODEL.HTC.INTERLEAVED,
            mask_info_flow=cfg.MODEL.HTC.MASK_INFO_FLOW,
            with_semantic=cfg.MODEL.HTC.WITH_SEMANTIC,
        )
        return ret

    @classmethod
    def _build_stage_mask_heads(cls, cfg, shape: ShapeSpec, num_stages: int):
        if cfg.MODEL.ROI_MASK_HEAD.NAME != "MaskRCNNConvUpsampleHead":
            raise ValueError(
                f"HTCROIHeads builds its own mask heads (conv-upsample + information flow); "
                f"MODEL.ROI_MASK_HEAD.NAME={cfg.MODEL.ROI_MASK_HEAD.NAME!r} is not supported"
            )
        info_flow = bool(cfg.MODEL.HTC.MASK_INFO_FLOW)
        return [InfoFlowMaskHead(cfg, shape, with_conv_res=info_flow and t > 0) for t in range(num_stages)]

    # ------------------------------------------------------------------------------------------------ training
    def _refine_last_stage(self) -> bool:
        return self.interleaved

    def _stage_mask_loss(self, features, sampled, refined, targets, stage) -> Dict[str, torch.Tensor]:
        if self.interleaved:
            # Re-assign and re-sample the refined ROIs at this stage's IoU; train mask head `stage` on them.
            # `_sample_stage` logs under the same stage name; the box-branch sample's numbers are overwritten.
            sampled = self._sample_stage(refined, targets, stage)
        return {"loss_mask": self._mask_loss_on(features, sampled, stage)}

    # ------------------------------------------------------------------------------------------------ masks
    def _info_flow_feature(self, pooled: torch.Tensor, stage: int) -> Optional[torch.Tensor]:
        """Last-conv feature of the chain of heads ``0 .. stage-1`` (None for stage 0 or without info flow)."""
        last_feat = None
        if self.mask_info_flow:
            for t in range(stage):
                last_feat = self.mask_head[t].features(pooled, last_feat)
        return last_feat

    def _stage_mask_logits(self, pooled: torch.Tensor, stage: int) -> torch.Tensor:
        last_feat = self._info_flow_feature(pooled, stage)
        return self.mask_head[stage].forward_with_feat(pooled, last_feat)[0]

    def _all_stage_mask_logits(self, pooled: torch.Tensor) -> List[torch.Tensor]:
        logits, last_feat = [], None
        for t in range(self.num_cascade_stages):
            out, feat = self.mask_head[t].forward_with_feat(pooled, last_feat)
            logits.append(out)
            if self.mask_info_flow:
                last_feat = feat
        return logits
