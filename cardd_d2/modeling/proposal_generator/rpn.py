"""detectron2's RPN with mmdetection's anchor assignment and box decoding (``CarDDRPN``)."""
from __future__ import annotations

from typing import List

import torch
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.structures import Boxes, Instances, pairwise_iou

from ..box_regression import MMDetBox2BoxTransform
from ..matcher import MMDetMatcher

__all__ = ["CarDDRPN", "LOW_QUALITY_MATCHES"]

LOW_QUALITY_MATCHES = ("detectron2", "mmdet")


@PROPOSAL_GENERATOR_REGISTRY.register()
class CarDDRPN(RPN):
    """detectron2's RPN; two config keys give mmdetection's training-time anchor assignment:

    * ``MODEL.RPN.LOW_QUALITY_MATCHES`` "mmdet": :class:`MMDetMatcher` with ``MODEL.RPN.LOW_QUALITY_MIN_IOU``
      ("detectron2": detectron2's ``Matcher``, as ``RPN``);
    * ``MODEL.RPN.BOUNDARY_THRESH`` >= 0 (mmdet ``allowed_border``): anchors crossing the image border by more than
      this are left out of the assignment itself (mmdet's ``anchor_inside_flags``) and ignored in the loss.
      detectron2's ``RPN`` matches all anchors and only then ignores the outside ones, so a ground truth whose best
      anchor crosses the border loses its low-quality match there.

    Proposals always decode as mmdetection's (:class:`MMDetBox2BoxTransform`: anchor deltas that would shrink a box
    below 1/62.5 of its anchor are clamped there). Apart from that, with the defaults ("detectron2", -1) it is
    ``RPN``.
    """

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["box2box_transform"] = MMDetBox2BoxTransform(weights=cfg.MODEL.RPN.BBOX_REG_WEIGHTS)
        rule = cfg.MODEL.RPN.LOW_QUALITY_MATCHES
        if rule not in LOW_QUALITY_MATCHES:
            raise ValueError(f"MODEL.RPN.LOW_QUALITY_MATCHES must be one of {LOW_QUALITY_MATCHES}, got {rule!r}")
        if rule == "mmdet":
            ret["anchor_matcher"] = MMDetMatcher(cfg.MODEL.RPN.IOU_THRESHOLDS, cfg.MODEL.RPN.IOU_LABELS,
                                                 min_pos_iou=cfg.MODEL.RPN.LOW_QUALITY_MIN_IOU)
        return ret

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        if self.anchor_boundary_thresh < 0:
            return super().label_and_sample_anchors(anchors, gt_instances)
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for inst in gt_instances:
            gt_boxes = inst.gt_boxes
            inside = anchors.inside_box(inst.image_size, self.anchor_boundary_thresh)
            matched_idxs, inside_labels = self.anchor_matcher(pairwise_iou(gt_boxes, anchors[inside]))
            labels = torch.full((len(anchors),), -1, dtype=inside_labels.dtype, device=gt_boxes.device)
            labels[inside] = inside_labels.to(gt_boxes.device)
            matched = torch.zeros_like(anchors.tensor)
            if len(gt_boxes):
                matched[inside] = gt_boxes.tensor[matched_idxs]
            gt_labels.append(self._subsample_labels(labels))
            matched_gt_boxes.append(matched)
        return gt_labels, matched_gt_boxes
