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

Switches: ``MODEL.HTC.INTERLEAVED``, ``MODEL.HTC.MASK_INFO_FLOW``, ``MODEL.HTC.WITH_SEMANTIC``. With the first
two off the model is the mmdet-style cascade (same weights -> same outputs).

Semantic branch (``MODEL.HTC.WITH_SEMANTIC``, off in the CarDD configs: it needs stuff segmentation maps, which CarDD
does not have): ``self.semantic_head`` is a :class:`~.htc_semantic.FusedSemanticHead` run on the FPN features in
every forward; in training its loss ``loss_semantic_seg`` is computed against the stuff maps that
:class:`cardd_d2.modeling.meta_arch.HTCRCNN` (``MODEL.META_ARCHITECTURE "HTCRCNN"``, required) passes along with
the images.
Its semantic feature is RoIAligned and added to the pooled box and/or mask ROI features of every stage
(``MODEL.HTC.SEMANTIC_FUSION``) by wrapping ``box_pooler`` / ``mask_pooler`` in
:class:`~.htc_semantic.SemanticFusionPooler`. See :mod:`.htc_semantic` for the mmdet details.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
from torch import nn
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY

from .cascade_mmdet import MMDetCascadeROIHeads
from .htc_mask_head import InfoFlowMaskHead
from .htc_semantic import (
    NO_STUFF_MAPS_HINT,
    FusedSemanticHead,
    SemanticFusionPooler,
    semantic_fusion,
    semantic_pooler_from_config,
)

_FUSION_BRANCHES = ("bbox", "mask")

__all__ = ["HTCROIHeads", "drop_semantic_head"]


def drop_semantic_head(state_dict: dict, prefix: str) -> List[str]:
    """Remove the ``{prefix}semantic_head.*`` entries from ``state_dict`` in place, logging what was dropped;
    returns the removed keys."""
    keys = [k for k in state_dict if k.startswith(f"{prefix}semantic_head.")]
    if keys:
        logits = state_dict.get(f"{prefix}semantic_head.conv_logits.weight")
        classes = f" ({logits.shape[0]} stuff classes)" if logits is not None else ""
        for k in keys:
            del state_dict[k]
        logging.getLogger(__name__).info(
            "HTC without the semantic branch (MODEL.HTC.WITH_SEMANTIC False): dropped the checkpoint's semantic head%s,"
            " %d tensors.", classes, len(keys)
        )
    return keys


@ROI_HEADS_REGISTRY.register()
class HTCROIHeads(MMDetCascadeROIHeads):
    """HTC ROI heads: interleaved box/mask cascade with mask information flow, optional semantic branch.

    ``self.mask_head[t]`` is an :class:`InfoFlowMaskHead`; heads ``t >= 1`` own ``conv_res`` (the information-flow
    1x1 conv) when ``MODEL.HTC.MASK_INFO_FLOW`` is on.
    """

    @configurable
    def __init__(
        self,
        *,
        interleaved: bool = True,
        mask_info_flow: bool = True,
        semantic_head: Optional[FusedSemanticHead] = None,
        **kwargs,
    ):
        """``semantic_head``: the semantic branch (None: none). The fusion is done by ``box_pooler`` /
        ``mask_pooler`` being :class:`SemanticFusionPooler` (see :meth:`from_config`)."""
        super().__init__(**kwargs)
        self.interleaved = bool(interleaved)
        self.mask_info_flow = bool(mask_info_flow)
        self.semantic_head = semantic_head
        if self.mask_on and self.mask_info_flow:
            for t, head in enumerate(self.mask_head):
                if t > 0 and not getattr(head, "with_conv_res", False):
                    raise ValueError(f"HTCROIHeads: mask head {t} lacks conv_res needed by MODEL.HTC.MASK_INFO_FLOW")

    @property
    def with_semantic(self) -> bool:
        return self.semantic_head is not None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # mmdetection's COCO HTC checkpoints carry the semantic head (183 COCO-stuff classes); a model without the
        # semantic branch (CarDD has no stuff maps) has no place for it, so it is dropped here, with a note.
        if not self.with_semantic:
            drop_semantic_head(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def _fusion_poolers(self) -> List[SemanticFusionPooler]:
        poolers = [getattr(self, "box_pooler", None), getattr(self, "mask_pooler", None)]
        return [p for p in poolers if isinstance(p, SemanticFusionPooler)]

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(interleaved=cfg.MODEL.HTC.INTERLEAVED, mask_info_flow=cfg.MODEL.HTC.MASK_INFO_FLOW)
        if cfg.MODEL.HTC.WITH_SEMANTIC:
            ret.update(cls._init_semantic_branch(cfg, input_shape, ret))
        return ret

    @classmethod
    def _init_semantic_branch(cls, cfg, input_shape, ret) -> Dict[str, nn.Module]:
        from ..meta_arch.htc_rcnn import HTCRCNN  # meta_arch imports roi_heads: import it when needed

        arch = cfg.MODEL.META_ARCHITECTURE
        arch_cls = META_ARCH_REGISTRY.get(arch) if arch in META_ARCH_REGISTRY else None
        if not (isinstance(arch_cls, type) and issubclass(arch_cls, HTCRCNN)):
            raise ValueError(
                f"MODEL.HTC.WITH_SEMANTIC=True needs MODEL.META_ARCHITECTURE 'HTCRCNN' (it passes the 'sem_seg' stuff "
                f"maps to the ROI heads), got {arch!r}. {NO_STUFF_MAPS_HINT}"
            )
        fusion = tuple(cfg.MODEL.HTC.SEMANTIC_FUSION)
        unknown = [b for b in fusion if b not in _FUSION_BRANCHES]
        if unknown:
            raise ValueError(f"MODEL.HTC.SEMANTIC_FUSION {fusion}: unknown branches {unknown}; use {_FUSION_BRANCHES}")
        if "mask" in fusion and not cfg.MODEL.MASK_ON:
            raise ValueError("MODEL.HTC.SEMANTIC_FUSION has 'mask' but MODEL.MASK_ON is False")
        head = FusedSemanticHead(
            input_shape,
            in_features=cfg.MODEL.HTC.SEMANTIC_IN_FEATURES,
            fusion_level=cfg.MODEL.HTC.SEMANTIC_FUSION_LEVEL,
            num_classes=cfg.MODEL.HTC.SEMANTIC_NUM_CLASSES,
            num_convs=cfg.MODEL.HTC.SEMANTIC_NUM_CONVS,
            conv_dim=cfg.MODEL.HTC.SEMANTIC_CONV_DIM,
            ignore_value=cfg.MODEL.HTC.SEMANTIC_IGNORE_VALUE,
            loss_weight=cfg.MODEL.HTC.SEMANTIC_LOSS_WEIGHT,
        )
        out: Dict[str, nn.Module] = {"semantic_head": head}
        branches = (("bbox", "box_pooler", "box_in_features"), ("mask", "mask_pooler", "mask_in_features"))
        for branch, key, in_key in branches:
            if branch not in fusion:
                continue
            channels = {input_shape[f].channels for f in ret[in_key]}
            if channels != {head.out_channels}:
                raise ValueError(
                    f"HTC semantic fusion into the {branch} branch: ROI features have {sorted(channels)} channels, "
                    f"the semantic feature {head.out_channels} ({cfg.MODEL.HTC.SEMANTIC_FUSION_LEVEL})"
                )
            out[key] = SemanticFusionPooler(ret[key], semantic_pooler_from_config(cfg, head.fusion_stride))
        return out

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, images, features, proposals, targets=None):
        if not self.with_semantic:
            return super().forward(images, features, proposals, targets)
        losses: Dict[str, torch.Tensor] = {}
        logits, semantic_feat = self.semantic_head(features, with_logits=self.training)
        if self.training:
            stuff = getattr(images, "sem_seg", None)
            if stuff is None:
                raise ValueError(
                    "HTCROIHeads with MODEL.HTC.WITH_SEMANTIC: the images carry no 'sem_seg' stuff maps in training "
                    f"(build the model with MODEL.META_ARCHITECTURE 'HTCRCNN'). {NO_STUFF_MAPS_HINT}"
                )
            losses["loss_semantic_seg"] = self.semantic_head.losses(logits, stuff)
        with semantic_fusion(self._fusion_poolers, semantic_feat):
            results, other = super().forward(images, features, proposals, targets)
        losses.update(other)
        return results, losses

    def forward_with_given_boxes(self, features, instances):
        pending = [p for p in self._fusion_poolers if p.semantic_feat is None]
        if not pending:  # no semantic branch, or called from forward() with the feature already set
            return super().forward_with_given_boxes(features, instances)
        _, semantic_feat = self.semantic_head(features, with_logits=False)
        with semantic_fusion(pending, semantic_feat):
            return super().forward_with_given_boxes(features, instances)

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
