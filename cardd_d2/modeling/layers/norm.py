"""BatchNorm as mmdetection fine-tunes its ResNets (``norm_eval=True`` with ``requires_grad=True``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenStatsBatchNorm2d", "FROZEN_STATS_BN"]

# MODEL.RESNETS.NORM value of this layer (read by cardd_d2.modeling.backbone).
FROZEN_STATS_BN = "FrozenStatsBN"


class FrozenStatsBatchNorm2d(nn.Module):
    """BatchNorm whose statistics stay fixed (normalised with ``running_mean`` / ``running_var`` in training too,
    never updated) while the scale ``weight`` and shift ``bias`` are trainable parameters.

    detectron2's ``FrozenBatchNorm2d`` fixes both; a plain ``BatchNorm2d`` trains both. State-dict names are
    ``FrozenBatchNorm2d``'s, so checkpoints of either load. It is no ``torch.nn.BatchNorm*`` subclass on purpose:
    ``ResNet.freeze`` then leaves it as it is (frozen stages only lose ``requires_grad``) and detectron2's optimizer
    gives its parameters ``SOLVER.WEIGHT_DECAY`` like mmdetection does.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training=False: the running statistics normalise and are not updated, whatever the module's mode
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False,
                            eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
