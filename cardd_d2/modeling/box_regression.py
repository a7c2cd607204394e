"""Box decoding as mmdetection's ``DeltaXYWHBBoxCoder`` does it.

mmdetection bounds the log-size deltas on both sides, ``dw, dh`` in ``[-log(1000/16), log(1000/16)]`` (its
``wh_ratio_clip`` 16/1000); detectron2's ``Box2BoxTransform`` bounds them only from above. The two decode the
same box unless a prediction shrinks it below 1/62.5 of its anchor or proposal, where mmdetection keeps that
minimum size and detectron2 returns a near-zero box (seen with random weights; such boxes also take part in NMS).
"""
from __future__ import annotations

import torch
from detectron2.modeling.box_regression import Box2BoxTransform

__all__ = ["MMDetBox2BoxTransform"]


class MMDetBox2BoxTransform(Box2BoxTransform):
    """``Box2BoxTransform`` whose ``apply_deltas`` also clamps ``dw, dh`` from below at ``-scale_clamp``."""

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        _, _, ww, wh = self.weights
        deltas = deltas.float().clone()
        deltas[:, 2::4] = deltas[:, 2::4].clamp(min=-self.scale_clamp * ww)
        deltas[:, 3::4] = deltas[:, 3::4].clamp(min=-self.scale_clamp * wh)
        return super().apply_deltas(deltas, boxes)
