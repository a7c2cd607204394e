"""Cascade Mask R-CNN ROI heads built the way mmdetection 2.x (``CascadeRoIHead``) builds them.

Differences from detectron2's :class:`CascadeROIHeads`, all taken from reading mmdet 2.25
(``mmdet/models/roi_heads/cascade_roi_head.py`` and ``configs/_base_/models/cascade_mask_rcnn_r50_fpn.py``):

* Every stage assigns AND re-samples its ROIs: MaxIoUAssigner at the stage IoU (0.5 / 0.6 / 0.7, no low-quality
  matches), RandomSampler 512 ROIs per image with at most 25 % positives and the ground-truth boxes added as
  proposals (``add_gt_as_proposals=True``). These equal detectron2's ROI_HEADS.BATCH_SIZE_PER_IMAGE (512),
  POSITIVE_FRACTION (0.25) and PROPOSAL_APPEND_GT (True) defaults, which are reused for every stage here.
  detectron2 samples once and re-labels all refined boxes in stages 2 and 3.
* Between stages (``bbox_head.refine_bboxes``) the sampled ROIs are regressed without gradient and the ones that
  were ground-truth boxes added as proposals (``pos_is_gt``) are dropped before the next stage.
* Losses of stage ``t`` (classification, box regression AND mask) are multiplied by ``stage_loss_weights[t]``
  (1, 0.5, 0.25); there is no gradient rescaling of the pooled features (detectron2 scales it by 1/3).
* One mask head per stage, trained on that stage's sampled positives (``CascadeRoIHead._mask_forward_train`` uses
  ``pos_bboxes`` of the stage's sampling results).
* Test (``CascadeRoIHead.simple_test``): ``ms_scores.append(cls_score)`` collects the raw classifier outputs of
  every stage, ``cls_score = sum(ms_scores) / len(ms_scores)`` averages them, and only then does the last
  ``bbox_head.get_bboxes`` apply softmax - i.e. mmdet averages LOGITS before softmax (detectron2 averages
  probabilities). Between stages, ROIs are regressed by each stage (class-agnostic). Boxes come from the last
  stage's regression of its input ROIs. Masks: every stage's mask head runs on the final detections,
  ``aug_masks.append(mask_pred.sigmoid())`` and ``merge_aug_masks`` takes their mean, i.e. the mean of the SIGMOID
  masks.

Box regression loss: mmdet's cascade uses SmoothL1(beta=1.0) for the ROI heads and SmoothL1(beta=1/9) for the RPN;
the configs set ``MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA`` / ``MODEL.RPN.SMOOTH_L1_BETA`` accordingly.
Classification loss: ``MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE`` through ``roi_cls_loss`` (each stage's predictor is a
:class:`FocalFastRCNNOutputLayers` with that stage's box-regression weights).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.modeling.roi_heads.mask_head import build_mask_head, mask_rcnn_loss
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage

from ..box_regression import MMDetBox2BoxTransform
from .focal_fast_rcnn import FocalFastRCNNOutputLayers

__all__ = ["MMDetCascadeROIHeads"]


def _check_stage_loss_weights(weights: Sequence[float], num_stages: int, key: str) -> List[float]:
    weights = [float(w) for w in weights]
    if len(weights) != num_stages:
        raise ValueError(
            f"{key} has {len(weights)} entries {tuple(weights)} but MODEL.ROI_BOX_CASCADE_HEAD.IOUS defines "
            f"{num_stages} cascade stages; give one loss weight per stage"
        )
    return weights


@ROI_HEADS_REGISTRY.register()
class MMDetCascadeROIHeads(CascadeROIHeads):
    """mmdet-style Cascade Mask R-CNN heads: per-stage re-sampling, stage loss weights, one mask head per stage,
    test-time mean of logits and mean of sigmoid masks.

    ``self.mask_head`` is an ``nn.ModuleList`` with one mask head per stage (``roi_heads.mask_head.{t}.*``).
    """

    @configurable
    def __init__(self, *, stage_loss_weights: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.stage_loss_weights = _check_stage_loss_weights(
            stage_loss_weights, self.num_cascade_stages, "MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS"
        )
        if self.mask_on and len(self.mask_head) != self.num_cascade_stages:
            raise ValueError(f"{type(self).__name__}: need one mask head per cascade stage")
        if self.keypoint_on:
            raise NotImplementedError(f"{type(self).__name__} does not support keypoints")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Runs before the children load: lets single-head checkpoints (Mask R-CNN, detectron2's cascade with one
        # mask head) initialise every stage.
        expand_single_head_checkpoint(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["stage_loss_weights"] = cls._stage_loss_weights_from_config(cfg)
        return ret

    @classmethod
    def _stage_loss_weights_from_config(cls, cfg):
        return tuple(cfg.MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS)

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        # Same heads and matchers as detectron2's cascade; predictors swapped for ones that honour CLS_LOSS_TYPE.
        ret["box_predictors"] = [
            FocalFastRCNNOutputLayers(cfg, head.output_shape, box2box_transform=MMDetBox2BoxTransform(weights=w))
            for head, w in zip(ret["box_heads"], cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS)
        ]
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if not ret:
            return ret
        num_stages = len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS)
        in_features = ret["mask_in_features"]
        shape = ShapeSpec(
            channels=input_shape[in_features[0]].channels,
            width=cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
            height=cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
        )
        ret["mask_head"] = nn.ModuleList(cls._build_stage_mask_heads(cfg, shape, num_stages))
        return ret

    @classmethod
    def _build_stage_mask_heads(cls, cfg, shape: ShapeSpec, num_stages: int) -> List[nn.Module]:
        return [build_mask_head(cfg, shape) for _ in range(num_stages)]

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, images, features, proposals, targets=None):
        del images
        if self.training:
            if targets is None:
                raise ValueError(f"{type(self).__name__}: targets are required in training")
            last_proposals, losses = self._forward_train(features, proposals, targets)
            return last_proposals, losses
        pred_instances = self._forward_box(features, proposals)
        pred_instances = self.forward_with_given_boxes(features, pred_instances)
        return pred_instances, {}

    def _forward_train(self, features, proposals, targets):
        box_features = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        storage = get_event_storage()
        losses: Dict[str, torch.Tensor] = {}
        sampled = proposals
        for stage in range(self.num_cascade_stages):
            weight = self.stage_loss_weights[stage]
            sampled = self._sample_stage(proposals, targets, stage)
            predictions = self._run_stage(box_features, sampled, stage)
            with storage.name_scope(f"stage{stage}"):
                stage_losses = self.box_predictor[stage].losses(predictions, sampled)
            need_refined = stage < self.num_cascade_stages - 1 or self._refine_last_stage()
            refined = self._refine(predictions, sampled, stage, image_sizes) if need_refined else None
            if self.mask_on:
                stage_losses.update(self._stage_mask_loss(features, sampled, refined, targets, stage))
            losses.update({f"{k}_stage{stage}": v * weight for k, v in stage_losses.items()})
            proposals = refined
        return sampled, losses

    def _refine_last_stage(self) -> bool:
        """Whether the last stage's boxes are refined in training (HTC's interleaved mask branch needs them)."""
        return False

    def _stage_mask_loss(self, features, sampled, refined, targets, stage) -> Dict[str, torch.Tensor]:
        """Cascade: mask head ``stage`` is trained on the positives the box branch of ``stage`` sampled."""
        return {"loss_mask": self._mask_loss_on(features, sampled, stage)}

    def _mask_loss_on(self, features, sampled: List[Instances], stage: int) -> torch.Tensor:
        fg, _ = select_foreground_proposals(sampled, self.num_classes)
        mask_features = [features[f] for f in self.mask_in_features]
        pooled = self.mask_pooler(mask_features, [x.proposal_boxes for x in fg])
        logits = self._stage_mask_logits(pooled, stage)
        head = self.mask_head[stage]
        return mask_rcnn_loss(logits, fg, getattr(head, "vis_period", 0)) * getattr(head, "loss_weight", 1.0)

    def _run_stage(self, features, proposals, stage):
        # mmdet weights stage losses explicitly and does not rescale the gradient on the pooled features.
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        box_features = self.box_head[stage](box_features)
        return self.box_predictor[stage](box_features)

    # ------------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def _sample_stage(self, proposals: List[Instances], targets: List[Instances], stage: int) -> List[Instances]:
        """mmdet's assign + sample for one stage: add gt boxes, match at the stage IoU, sample
        BATCH_SIZE_PER_IMAGE ROIs with at most POSITIVE_FRACTION positives.

        Returns per-image Instances with ``proposal_boxes``, ``gt_classes``, ``from_gt`` (the ROI is a ground-truth
        box added as a proposal) and the matched ``gt_*`` fields of the targets.
        """
        matcher = self.proposal_matchers[stage]
        out, num_fg, num_bg = [], [], []
        for props, tgt in zip(proposals, targets):
            boxes = props.proposal_boxes
            num_props = len(boxes)
            if self.proposal_append_gt and len(tgt) > 0:
                boxes = Boxes.cat([boxes, tgt.gt_boxes.to(boxes.device)])
            matched_idxs, matched_labels = matcher(pairwise_iou(tgt.gt_boxes, boxes))
            sampled_idxs, gt_classes = self._sample_proposals(matched_idxs, matched_labels, tgt.gt_classes)
            inst = Instances(props.image_size)
            inst.proposal_boxes = boxes[sampled_idxs]
            inst.gt_classes = gt_classes
            inst.from_gt = sampled_idxs >= num_props
            if len(tgt) > 0:
                sampled_targets = matched_idxs[sampled_idxs]
                for name, value in tgt.get_fields().items():
                    if name.startswith("gt_") and not inst.has(name):
                        inst.set(name, value[sampled_targets])
            n_bg = int((gt_classes == self.num_classes).sum())
            num_bg.append(n_bg)
            num_fg.append(gt_classes.numel() - n_bg)
            out.append(inst)
        storage = get_event_storage()
        storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples", sum(num_fg) / max(len(num_fg), 1))
        storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples", sum(num_bg) / max(len(num_bg), 1))
        return out

    @torch.no_grad()
    def _refine(self, predictions, sampled: List[Instances], stage: int, image_sizes) -> List[Instances]:
        """mmdet's ``refine_bboxes``: regress the sampled ROIs by stage ``stage``, drop the ones that were gt boxes."""
        boxes = self.box_predictor[stage].predict_boxes(predictions, sampled)
        kept = [b[~s.from_gt] for b, s in zip(boxes, sampled)]
        return self._create_proposals_from_boxes(kept, image_sizes)

    # ------------------------------------------------------------------------------------------------ masks
    def _stage_mask_logits(self, pooled: torch.Tensor, stage: int) -> torch.Tensor:
        """Mask logits of stage ``stage`` for pooled ROI features (cascade: independent heads)."""
        return self.mask_head[stage].layers(pooled)

    def _all_stage_mask_logits(self, pooled: torch.Tensor) -> List[torch.Tensor]:
        return [self.mask_head[t].layers(pooled) for t in range(self.num_cascade_stages)]

    def _forward_mask(self, features, instances):
        """Inference only: mean over stages of the sigmoid masks of each detection's class."""
        if not self.mask_on:
            return instances
        if self.training:
            raise RuntimeError(f"{type(self).__name__}._forward_mask is the inference path; training uses forward()")
        mask_features = [features[f] for f in self.mask_in_features]
        pooled = self.mask_pooler(mask_features, [x.pred_boxes for x in instances])
        stage_logits = self._all_stage_mask_logits(pooled)
        probs = average_stage_mask_probs(stage_logits, instances)
        for inst, p in zip(instances, probs.split([len(i) for i in instances])):
            inst.pred_masks = p
        return instances

    # ------------------------------------------------------------------------------------------------ boxes
    def _forward_box(self, features, proposals, targets=None):
        """Inference: box cascade; softmax of the mean of the stages' logits; boxes from the last stage."""
        if self.training:
            raise RuntimeError(f"{type(self).__name__}._forward_box is the inference path; training uses forward()")
        box_features = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        stage_logits = []
        predictions = None
        for stage in range(self.num_cascade_stages):
            if stage > 0:
                boxes = self.box_predictor[stage - 1].predict_boxes(predictions, proposals)
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            predictions = self._run_stage(box_features, proposals, stage)
            stage_logits.append(predictions[0])
        last = self.box_predictor[-1]
        mean_logits = average_stage_logits(stage_logits)
        scores = last.predict_probs((mean_logits, predictions[1]), proposals)
        boxes = last.predict_boxes(predictions, proposals)
        pred_instances, _ = fast_rcnn_inference(
            boxes, scores, image_sizes, last.test_score_thresh, last.test_nms_thresh, last.test_topk_per_image
        )
        return pred_instances


_PER_STAGE_MODULES = ("box_head", "box_predictor", "mask_head")


def expand_single_head_checkpoint(roi_heads: nn.Module, state_dict: dict, prefix: str) -> List[str]:
    """Copy single-head checkpoint entries into every cascade stage, in place.

    For each of ``box_head``, ``box_predictor`` and ``mask_head``: when ``state_dict`` has ``{prefix}{name}.{param}``
    entries (one head, e.g. a Mask R-CNN or detectron2 cascade mask head) but none of ``{prefix}{name}.{t}.*``, every
    entry is copied to ``{prefix}{name}.{t}.{param}`` for every stage ``t`` whose tensor has the same shape (class
    layers with a different number of classes are left at their initialisation) and the single-head entry is
    removed. Returns the destination keys that were filled.
    """
    own = roi_heads.state_dict()
    filled, dropped = [], []
    for name in _PER_STAGE_MODULES:
        head = getattr(roi_heads, name, None)
        if not isinstance(head, nn.ModuleList):
            continue
        base = f"{prefix}{name}."
        keys = [k for k in state_dict if k.startswith(base)]
        if not keys or any(k[len(base):].split(".", 1)[0].isdigit() for k in keys):
            continue
        for k in keys:
            value = state_dict.pop(k)
            rest = k[len(base):]
            for t in range(len(head)):
                dst_local = f"{name}.{t}.{rest}"
                target = own.get(dst_local)
                if target is not None and tuple(target.shape) == tuple(value.shape):
                    state_dict[f"{base}{t}.{rest}"] = value
                    filled.append(f"{base}{t}.{rest}")
                else:
                    dropped.append(f"{k} -> {base}{t}.{rest}")
    if filled or dropped:
        logger = logging.getLogger(__name__)
        logger.info("Copied %d single-head checkpoint tensors into the cascade stages.", len(filled))
        if dropped:
            logger.warning("Not copied into the cascade stages (missing or different shape): %s", ", ".join(dropped))
    return filled


def average_stage_logits(stage_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """mmdet's test-time classification: mean of the stages' raw ``[R, K+1]`` logits (softmax applied after)."""
    if not stage_logits:
        raise ValueError("average_stage_logits: no stages")
    return sum(stage_logits) / float(len(stage_logits))


def average_stage_mask_probs(stage_logits: Sequence[torch.Tensor], instances: List[Instances]) -> torch.Tensor:
    """Mean over stages of ``sigmoid(mask logits)`` of each detection's predicted class.

    ``stage_logits``: per stage ``[N, C, M, M]`` (C = num classes, or 1 for class-agnostic masks), N = total
    detections over ``instances`` in order. Returns ``[N, 1, M, M]`` probabilities (detectron2's ``pred_masks``
    layout before pasting).
    """
    if not stage_logits:
        raise ValueError("average_stage_mask_probs: no stages")
    n = stage_logits[0].shape[0]
    if n == 0:
        return stage_logits[0][:, :1].sigmoid()
    if stage_logits[0].shape[1] == 1:
        index = torch.zeros(n, dtype=torch.long, device=stage_logits[0].device)
    else:
        index = torch.cat([x.pred_classes for x in instances]).to(stage_logits[0].device)
    rows = torch.arange(n, device=index.device)
    probs = [logits[rows, index][:, None].sigmoid() for logits in stage_logits]
    return sum(probs) / float(len(probs))
