"""Building blocks shared by the SOD models (no detectron2 here).

* :class:`Conv2dX100` - a convolution whose weight is multiplied by a constant (100 in CSNet) in forward.
* :class:`FrozenBatchNorm2d` - batch norm that always normalises with its running statistics and whose affine
  parameters never train (the caffe ResNet-50 of PoolNet / SGL-KRN, run in ``use_global_stats`` mode).
* :func:`check_input` - shape / minimum-size validation with a readable message.
* :func:`count_parameters`.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv2dX100", "FrozenBatchNorm2d", "check_input", "count_parameters", "normal_conv_init_"]


class Conv2dX100(nn.Conv2d):
    """``nn.Conv2d`` that convolves with ``scale * weight`` (CSNet: scale 100, "for faster convergence").

    The stored parameter keeps the plain name ``weight`` so state dicts match the reference checkpoints.
    """

    def __init__(self, *args, scale: float = 100.0, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale:g}"


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch norm in permanent inference mode with non-trainable affine parameters.

    It keeps ``nn.BatchNorm2d``'s parameter / buffer names (weight, bias, running_mean, running_var,
    num_batches_tracked) so caffe-converted ResNet checkpoints load unchanged; ``model.train()`` does not
    switch it to batch statistics and its running statistics are never updated.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps=eps)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)


def normal_conv_init_(module: nn.Module, std: float = 0.01) -> None:
    """Initialise every ``nn.Conv2d`` below ``module``: weight ~ N(0, std), bias = 0 (PoolNet's weights_init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_input(x: torch.Tensor, model_name: str, min_size: int = 1, divisor: int = 1,
                size_ok: Optional[Callable[[int], bool]] = None) -> None:
    """Validate an image batch ``x`` of shape [B, 3, H, W] for ``model_name``.

    Raises ``ValueError`` naming the model, the offending size and the rule it breaks.
    """
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{model_name}: expected an image batch of shape [B, 3, H, W], got {shape}")
    h, w = int(x.shape[2]), int(x.shape[3])
    for name, s in (("height", h), ("width", w)):
        if s < min_size or (size_ok is not None and not size_ok(s)):
            raise ValueError(f"{model_name}: input {name} {s} is too small (input {h}x{w}); "
                             f"the smallest size this architecture accepts is {min_size} px per side")
        if s % divisor:
            raise ValueError(f"{model_name}: input {name} {s} is not a multiple of {divisor} (input {h}x{w}); "
                             f"its octave branches need sizes divisible by {divisor}")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
