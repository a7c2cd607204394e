"""Training losses of the SOD models, as the reference training scripts compute them.

``build_sod_loss(name, **kwargs)`` returns a callable ``loss(outputs, target, edge=None, model=None) -> (total, terms)``
where ``outputs`` is the model's forward output, ``target`` the GT saliency map [B, 1, H, W] in [0, 1] and
``terms`` a dict of detached 0-dim tensors (for logging).  Losses always run in float32 with autocast disabled
(``binary_cross_entropy`` on probabilities is not autocast-safe).

* ``u2net`` / ``u2netp``: sum over the 7 sigmoid maps of BCE (mean).
* ``poolnet``: BCE-with-logits summed over pixels, divided by ``iter_size * batch`` (iter_size 10: the reference
  accumulates gradients over 10 images before an optimizer step; the accumulation itself is the trainer's job).
* ``sgl_krn``: [2 (BCE+IoU)(final) + (BCE+IoU)(merged solid) + sum_k ((BCE+IoU)(solid_k) + bce2d(contour_k, edge))]
  / (iter_size * batch); ``edge`` defaults to :func:`cardd_sod.data.edges.mask_to_edge` of the target.
* ``csnet``: BCE-with-logits (mean) + 3.0 x :func:`~cardd_sod.models.csnet.csnet_dynamic_weight_decay` of the
  model (pass ``model=`` when building or calling; ``dwd_weight=0`` disables the term).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

from .data.edges import mask_to_edge
from .models.csnet import csnet_dynamic_weight_decay

__all__ = ["build_sod_loss", "list_sod_losses", "register_sod_loss", "iou_loss", "bce2d", "SODLoss"]


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - sum(p t) / (sum(t) + sum(p) - sum(p t)) (SGL-KRN's IoU loss)."""
    inter = (pred * target).flatten(1).sum(1)
    union = target.flatten(1).sum(1) + pred.flatten(1).sum(1) - inter
    return (1.0 - inter / union).mean()


def bce2d(pred: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE on probabilities (SGL-KRN / PoolNet ``bce2d``): pixels with edge == 1 weigh #neg / N,
    pixels with edge == 0 weigh 1.1 #pos / N (N = #pos + #neg over the whole batch), any other value weighs 0;
    mean over all pixels."""
    if pred.shape != edge.shape:
        raise ValueError(f"bce2d: prediction shape {tuple(pred.shape)} != edge shape {tuple(edge.shape)}")
    pos = (edge == 1).float()
    neg = (edge == 0).float()
    n_pos, n_neg = pos.sum(), neg.sum()
    n = (n_pos + n_neg).clamp_min(1.0)
    weight = (n_neg / n) * pos + (1.1 * n_pos / n) * neg
    return F.binary_cross_entropy(pred, edge, weight=weight, reduction="mean")


def _bce_iou(pred, target):
    return F.binary_cross_entropy(pred, target, reduction="mean") + iou_loss(pred, target)


def _as_outputs(outputs, count: int, name: str) -> Sequence[torch.Tensor]:
    if torch.is_tensor(outputs):
        outputs = (outputs,)
    outputs = tuple(outputs)
    if len(outputs) != count:
        raise ValueError(f"{name} loss: expected {count} model output(s), got {len(outputs)}")
    return outputs


def _check_target(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name} loss: output shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------------------------
class SODLoss:
    """Base: runs ``compute`` in float32 with autocast off and returns (total / iter_size, detached terms).

    ``iter_size``: images whose gradients are accumulated before one optimizer step; each image's loss is divided
    by it so that the accumulated gradient is their mean (the release's PoolNet / SGL-KRN rule)."""

    name = "sod"

    def __init__(self, iter_size: int = 1):
        if int(iter_size) < 1:
            raise ValueError(f"{self.name} loss: iter_size must be >= 1, got {iter_size}")
        self.iter_size = int(iter_size)

    def __call__(self, outputs, target: torch.Tensor, edge: Optional[torch.Tensor] = None, **kwargs
                 ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        dev = target.device.type
        with torch.autocast(device_type=dev, enabled=False):
            if torch.is_tensor(outputs):
                outputs = outputs.float()
            else:
                outputs = tuple(o.float() for o in outputs)
            target = target.float()
            edge = None if edge is None else edge.float()
            total, terms = self.compute(outputs, target, edge, **kwargs)
        return total / self.iter_size, {k: v.detach() for k, v in terms.items()}

    def compute(self, outputs, target, edge, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError


class U2NetLoss(SODLoss):
    name = "u2net"
    names = ("d0", "d1", "d2", "d3", "d4", "d5", "d6")

    def compute(self, outputs, target, edge, **kwargs):
        outs = _as_outputs(outputs, 7, self.name)
        _check_target(outs[0], target, self.name)
        terms = {n: F.binary_cross_entropy(o, target, reduction="mean") for n, o in zip(self.names, outs)}
        total = sum(terms.values())
        return total, terms


class PoolNetLoss(SODLoss):
    name = "poolnet"

    def __init__(self, iter_size: int = 10):
        super().__init__(iter_size)

    def compute(self, outputs, target, edge, **kwargs):
        (logits,) = _as_outputs(outputs, 1, self.name)
        _check_target(logits, target, self.name)
        bce_sum = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        return bce_sum / target.shape[0], {"bce_sum": bce_sum}


class SGLKRNLoss(SODLoss):
    name = "sgl_krn"

    def __init__(self, iter_size: int = 10):
        super().__init__(iter_size)

    def compute(self, outputs, target, edge, **kwargs):
        outs = _as_outputs(outputs, 10, self.name)
        _check_target(outs[0], target, self.name)
        if edge is None:
            edge = mask_to_edge(target)
        _check_target(outs[0], edge, self.name + " (edge)")
        terms = {"final": _bce_iou(outs[0], target), "solid": _bce_iou(outs[1], target)}
        for k in range(1, 5):
            terms[f"solid{k}"] = _bce_iou(outs[2 * k], target)
            terms[f"contour{k}"] = bce2d(outs[2 * k + 1], edge)
        total = (2.0 * terms["final"] + sum(v for n, v in terms.items() if n != "final"))
        return total / target.shape[0], terms


class CSNetLoss(SODLoss):
    name = "csnet"

    def __init__(self, model=None, dwd_weight: float = 3.0, flop_expand: float = 1.0, iter_size: int = 1):
        super().__init__(iter_size)
        self.model = model
        self.dwd_weight = float(dwd_weight)
        self.flop_expand = float(flop_expand)

    def compute(self, outputs, target, edge, model=None, **kwargs):
        (logits,) = _as_outputs(outputs, 1, self.name)
        _check_target(logits, target, self.name)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="mean")
        terms = {"bce": bce}
        total = bce
        if self.dwd_weight != 0.0:
            model = model if model is not None else self.model
            if model is None:
                raise ValueError("csnet loss: the dynamic weight decay term needs the model; pass model= to "
                                 "build_sod_loss('csnet', model=...) or to the call (or dwd_weight=0)")
            dwd = csnet_dynamic_weight_decay(model, flop_expand=self.flop_expand)
            terms["dynamic_weight_decay"] = dwd
            total = bce + self.dwd_weight * dwd
        return total, terms


_LOSSES: Dict[str, Callable[..., SODLoss]] = {
    "u2net": U2NetLoss,
    "u2netp": U2NetLoss,
    "poolnet": PoolNetLoss,
    "sgl_krn": SGLKRNLoss,
    "csnet": CSNetLoss,
}


def register_sod_loss(name: str, factory: Callable[..., SODLoss]) -> None:
    """Make ``factory(iter_size=..., **kwargs)`` available as ``build_sod_loss(name)`` (a model spec's ``loss``)."""
    if name in _LOSSES:
        raise KeyError(f"SOD loss {name!r} is already registered")
    _LOSSES[name] = factory


def list_sod_losses():
    return sorted(_LOSSES)


def build_sod_loss(name: str, **kwargs) -> SODLoss:
    """Loss for SOD model ``name`` (same names as :func:`cardd_sod.models.build_sod_model`).

    kwargs: ``iter_size`` (default 10 for poolnet / sgl_krn, else 1), ``model`` / ``dwd_weight`` / ``flop_expand``
    (csnet).  Calls take ``(outputs, target, edge=None, model=None)``.
    """
    key = str(name).lower()
    if key not in _LOSSES:
        raise KeyError(f"unknown SOD loss {name!r}; available: {list_sod_losses()}")
    return _LOSSES[key](**kwargs)
