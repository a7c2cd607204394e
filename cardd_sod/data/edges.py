"""Edge maps derived from saliency masks (SGL-KRN's contour targets when no edge file exists)."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["mask_to_edge"]


def mask_to_edge(mask, threshold: float = 0.5):
    """Edge map of a saliency mask: the 2-px band where the binarised mask changes (3x3 dilation minus 3x3
    erosion, pixels outside the image counting as background), values in {0, 1}.

    ``mask``: torch tensor or numpy array of shape [H, W], [1, H, W] or [B, 1, H, W] (foreground > ``threshold``;
    a uint8 0/255 mask works as is).  Returns the same type and shape, float32.
    """
    is_np = isinstance(mask, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(mask)) if is_np else mask
    if not torch.is_tensor(t) or t.dim() not in (2, 3, 4) or (t.dim() >= 3 and t.shape[-3] != 1):
        shape = tuple(t.shape) if torch.is_tensor(t) else type(mask).__name__
        raise ValueError(f"mask_to_edge: expected a mask of shape [H, W], [1, H, W] or [B, 1, H, W], got {shape}")
    shape = t.shape
    b = (t.reshape(-1, 1, shape[-2], shape[-1]).float() > threshold).float()
    dil = F.max_pool2d(b, 3, 1, 1)
    ero = -F.max_pool2d(-F.pad(b, (1, 1, 1, 1), value=0.0), 3, 1, 0)
    edge = (dil - ero).reshape(shape)
    return edge.numpy().astype(np.float32) if is_np else edge
