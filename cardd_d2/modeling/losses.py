"""Classification losses for the ROI box classifier (DCN+'s focal loss).

``roi_cls_loss`` is the single entry point used by every cardd box predictor (standard, mmdet-style cascade, HTC).

Variants
--------
``loss_type="ce"``
    detectron2's softmax cross-entropy, averaged over the sampled ROIs.
``loss_type="focal", variant="mmdet_sigmoid"`` (default; what the released DCN+ trained)
    mmdet 2.x ``FocalLoss(use_sigmoid=True)`` inside a bbox head that keeps ``K + 1`` outputs. Notes from reading
    mmdet 2.25 (``mmdet/models/losses/focal_loss.py`` and ``mmdet/models/roi_heads/bbox_heads/bbox_head.py``):

    * The label of a background ROI is ``K`` (``BBoxHead._get_target_single`` fills labels with ``num_classes``).
    * ``FocalLoss.forward`` on CPU one-hot encodes the labels with ``pred.size(1) + 1 = K + 2`` columns and keeps
      the first ``K + 1``; mmcv's CUDA ``sigmoid_focal_loss`` kernel treats column ``c`` as positive iff
      ``label == c``. Both give a one-hot target over all ``K + 1`` logits in which a background ROI has column
      ``K`` positive, and every logit (background column included) gets a sigmoid focal term.
    * Per logit ``z`` with target ``y`` and ``p = sigmoid(z)``:
      ``-[alpha * y * (1-p)^gamma * log(p) + (1-alpha) * (1-y) * p^gamma * log(1-p)]``.
    * ``BBoxHead.loss`` passes ``label_weights`` (1 for every sampled ROI; ``pos_weight`` is -1 in the released
      configs) and ``avg_factor = max(#(label_weights > 0), 1)`` = the number of sampled ROIs ``N``; with
      ``reduction='mean'`` and an ``avg_factor``, ``weight_reduce_loss`` returns ``loss.sum() / (avg_factor + eps)``
      (``eps`` = float32 machine epsilon, a relative difference of ~1e-7 that we leave out: we divide by ``N``).
    * The loss is computed in fp32 (``force_fp32``); so is ours.
    * Inference is untouched: ``BBoxHead.get_bboxes`` still applies softmax to the ``K + 1`` logits.
``loss_type="focal", variant="softmax"``
    The paper's Eq. (1): ``-alpha * (1 - p_t)^gamma * log(p_t)`` with ``p_t`` the softmax probability of the
    ground-truth class (background included), averaged over the ``N`` ROIs.

Every variant returns ``logits.sum() * 0`` for an empty batch, so the graph stays connected (as detectron2 does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ROI_CLS_LOSS_TYPES = ("ce", "focal")
FOCAL_VARIANTS = ("mmdet_sigmoid", "softmax")

__all__ = [
    "roi_cls_loss",
    "sigmoid_focal_loss_all_logits",
    "softmax_focal_loss",
    "ROI_CLS_LOSS_TYPES",
    "FOCAL_VARIANTS",
]


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # mmdet computes the loss in fp32 (force_fp32); keep float64 inputs as they are.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_inputs(logits: torch.Tensor, gt_classes: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"roi_cls_loss: logits must be [N, K+1], got shape {tuple(logits.shape)}")
    if gt_classes.dim() != 1 or gt_classes.shape[0] != logits.shape[0]:
        raise ValueError(
            f"roi_cls_loss: gt_classes must be [N] with N = {logits.shape[0]}, got shape {tuple(gt_classes.shape)}"
        )


def sigmoid_focal_loss_all_logits(
    logits: torch.Tensor, gt_classes: torch.Tensor, alpha: float = 0.5, gamma: float = 2.0
) -> torch.Tensor:
    """mmdet 2.x sigmoid focal loss on all K+1 logits (one-hot target, background = column K), sum / N."""
    _check_inputs(logits, gt_classes)
    n = logits.shape[0]
    if n == 0:
        return logits.sum() * 0.0
    z = _at_least_fp32(logits)
    target = F.one_hot(gt_classes.long(), num_classes=z.shape[1]).to(z.dtype)
    p = torch.sigmoid(z)
    # BCE with logits is -[y log p + (1-y) log(1-p)], computed stably.
    bce = F.binary_cross_entropy_with_logits(z, target, reduction="none")
    p_wrong = p * (1.0 - target) + (1.0 - p) * target  # 1 - p_t of the binary problem
    class_weight = alpha * target + (1.0 - alpha) * (1.0 - target)
    per_logit = class_weight * p_wrong.pow(gamma) * bce
    return per_logit.sum() / n


def softmax_focal_loss(
    logits: torch.Tensor, gt_classes: torch.Tensor, alpha: float = 0.5, gamma: float = 2.0
) -> torch.Tensor:
    """The paper's Eq. (1): mean over ROIs of -alpha * (1 - p_t)^gamma * log p_t, p_t = softmax prob of the gt class."""
    _check_inputs(logits, gt_classes)
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    log_probs = F.log_softmax(_at_least_fp32(logits), dim=1)
    log_pt = log_probs.gather(1, gt_classes.long().view(-1, 1)).squeeze(1)
    pt = log_pt.exp()
    return (-alpha * (1.0 - pt).pow(gamma) * log_pt).mean()


def roi_cls_loss(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    loss_type: str = "focal",
    variant: str = "mmdet_sigmoid",
    alpha: float = 0.5,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Classification loss of the ROI box head.

    Args:
        logits: ``[N, K+1]`` raw classifier outputs, column ``K`` is background.
        gt_classes: ``[N]`` long tensor of labels in ``[0, K]`` (``K`` = background).
        loss_type: ``"focal"`` or ``"ce"`` (detectron2's cross-entropy; ``variant/alpha/gamma`` unused).
        variant: ``"mmdet_sigmoid"`` (released DCN+) or ``"softmax"`` (paper Eq. (1)).
        alpha, gamma: focal parameters.

    Returns:
        A scalar tensor; ``logits.sum() * 0`` when ``N == 0``.
    """
    if loss_type == "ce":
        _check_inputs(logits, gt_classes)
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(_at_least_fp32(logits), gt_classes.long(), reduction="mean")
    if loss_type != "focal":
        raise ValueError(f"roi_cls_loss: unknown loss_type {loss_type!r}; expected one of {ROI_CLS_LOSS_TYPES}")
    if gamma < 0:
        raise ValueError(f"roi_cls_loss: gamma must be >= 0, got {gamma}")
    if variant == "mmdet_sigmoid":
        return sigmoid_focal_loss_all_logits(logits, gt_classes, alpha=alpha, gamma=gamma)
    if variant == "softmax":
        return softmax_focal_loss(logits, gt_classes, alpha=alpha, gamma=gamma)
    raise ValueError(f"roi_cls_loss: unknown focal variant {variant!r}; expected one of {FOCAL_VARIANTS}")
