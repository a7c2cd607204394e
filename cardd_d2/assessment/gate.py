"""The damaged / undamaged gate: a binary classifier that discards images before detection.

Paper (Section V-G): an image is discarded when the classifier's P(undamaged) exceeds 0.9
(``MODEL.DAMAGE_GATE.DISCARD_THRESHOLD``); the remaining images go to the detector.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .classifier import DAMAGED, build_transform, load_classifier_checkpoint

__all__ = ["DamageGate"]


class DamageGate:
    """Wraps a 2-way classifier: ``damaged_proba(images)`` and ``discard(p_damaged)``.

    Images are BGR uint8 arrays (as read by :func:`cardd_d2.assessment.images.load_image`).
    """

    def __init__(self, model: torch.nn.Module, input_size: int = 224, discard_threshold: float = 0.9,
                 device: str = "cpu", batch_size: int = 16, name: str = ""):
        if not 0.0 <= discard_threshold <= 1.0:
            raise ValueError(f"discard_threshold must be in [0, 1], got {discard_threshold}")
        self.model = model.to(device).eval()
        self.input_size = int(input_size)
        self.discard_threshold = float(discard_threshold)
        self.device = device
        self.batch_size = int(batch_size)
        self.name = name
        self._transform = build_transform(self.input_size, train=False)

    @classmethod
    def from_checkpoint(cls, path: str, discard_threshold: float = 0.9, device: str = "cpu",
                        default_input_size: int = 224, **kw) -> "DamageGate":
        """The input size is the one the checkpoint was trained at (``default_input_size`` if it has none)."""
        model, ckpt = load_classifier_checkpoint(path, device=device)
        return cls(model, input_size=ckpt.get("input_size", default_input_size), discard_threshold=discard_threshold,
                   device=device, name=path, **kw)

    @classmethod
    def from_config(cls, cfg, device: str | None = None) -> "DamageGate | None":
        """Gate from ``cfg.MODEL.DAMAGE_GATE`` (None when WEIGHTS is empty)."""
        c = cfg.MODEL.DAMAGE_GATE
        if not c.WEIGHTS:
            return None
        dev = device or ("cuda" if str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available() else "cpu")
        return cls.from_checkpoint(c.WEIGHTS, discard_threshold=c.DISCARD_THRESHOLD, device=dev,
                                   default_input_size=c.INPUT_SIZE)

    @torch.no_grad()
    def damaged_proba(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        out = []
        for i in range(0, len(images_bgr), self.batch_size):
            batch = [self._transform(Image.fromarray(np.ascontiguousarray(im[:, :, ::-1])))
                     for im in images_bgr[i:i + self.batch_size]]
            x = torch.stack(batch).to(self.device)
            out.append(torch.softmax(self.model(x).float(), dim=1)[:, DAMAGED].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def discard(self, p_damaged: float) -> bool:
        """True when P(undamaged) = 1 - p_damaged is above the threshold."""
        return (1.0 - float(p_damaged)) > self.discard_threshold

    def describe(self) -> dict:
        return {"weights": self.name, "input_size": self.input_size, "discard_threshold": self.discard_threshold}
