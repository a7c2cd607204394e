"""mmdetection's MaxIoUAssigner as a detectron2 ``Matcher``."""
from __future__ import annotations

from typing import List

import torch
from detectron2.modeling.matcher import Matcher

__all__ = ["MMDetMatcher"]


class MMDetMatcher(Matcher):
    """detectron2's ``Matcher`` (thresholds and labels unchanged) with mmdetection 2.x's low-quality rule
    (``MaxIoUAssigner(match_low_quality=True, gt_max_assign_all=True, min_pos_iou=...)``):

    for every ground truth ``g`` whose best IoU with any prediction is ``>= min_pos_iou``, every prediction with that
    best IoU becomes positive AND is matched to ``g``; ground truths are visited in index order, so a prediction that
    is the best one for several keeps the last. detectron2's own rule (``allow_low_quality_matches``) has no minimum
    and keeps each prediction's argmax ground truth.
    """

    def __init__(self, thresholds: List[float], labels: List[int], *, min_pos_iou: float):
        super().__init__(thresholds, labels, allow_low_quality_matches=False)
        self.min_pos_iou = float(min_pos_iou)

    def __call__(self, match_quality_matrix: torch.Tensor):
        matches, match_labels = super().__call__(match_quality_matrix)
        if match_quality_matrix.numel() == 0:
            return matches, match_labels
        best_per_gt, _ = match_quality_matrix.max(dim=1)
        is_best = (match_quality_matrix == best_per_gt[:, None]) & (best_per_gt[:, None] >= self.min_pos_iou)
        # the last ground truth (highest index) for which a prediction is a best match wins, as in mmdet's loop
        gt_index = torch.arange(1, len(best_per_gt) + 1, device=matches.device)[:, None]
        last_gt = (is_best.to(gt_index.dtype) * gt_index).max(dim=0).values
        reassigned = last_gt > 0
        matches[reassigned] = last_gt[reassigned] - 1
        match_labels[reassigned] = 1
        return matches, match_labels
