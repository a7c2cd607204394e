"""What the trainer needs to know about a SOD model, declared once per model (``SPEC`` of its module)."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from torch import nn

from ..data.preprocess import PreprocessSpec

__all__ = ["SODModelSpec"]


@dataclasses.dataclass(frozen=True)
class SODModelSpec:
    preprocess: PreprocessSpec           # input size, augmentation and normalisation of the release
    loss: str                            # name for cardd_sod.losses.build_sod_loss
    output_kind: str                     # "logits" or "sigmoid"
    output_names: Sequence[str]          # what forward() returns, in order (one name: a single tensor)
    iter_size: int = 1                   # images whose gradients the release accumulates per optimizer step
    shuffle: bool = True                 # training order: shuffled per epoch, or the sorted file order
    min_input_size: int = 1              # smallest H and W the architecture accepts
    size_divisor: int = 1                # H and W must be multiples of this
    # the constructor takes backbone_weights= (ImageNet caffe ResNet-50); the trainer passes MODEL.BACKBONE_WEIGHTS
    imagenet_backbone: bool = False
    # Adam parameter groups as the release builds them: fn(model, weight_decay) -> groups; None = one group
    param_groups: Optional[Callable[[nn.Module, float], list]] = None

    def __post_init__(self):
        if self.output_kind not in ("logits", "sigmoid"):
            raise ValueError(f"output_kind must be 'logits' or 'sigmoid', got {self.output_kind!r}")
        if int(self.iter_size) < 1:
            raise ValueError(f"iter_size must be >= 1, got {self.iter_size}")

    @property
    def expects_0_255(self) -> bool:
        """Mean / std are in 0-255 pixel units (caffe style)."""
        return self.preprocess.scale == "none"
