"""Saliency maps -> uint8 PNG at the original image size, as the released test scripts write them.

Each model's preprocessing spec names its rule (``save_rule``); the maps a rule writes are what the metrics read, so
the rounding below moves the scores (weighted F by a few hundredths between floor and round):

* ``skimage_floor`` (CSNet, ``CSNet_training/test.py``): the sigmoid map at the network size is resized to (H, W)
  with ``skimage.transform.resize`` (order 1, mode ``reflect``, no anti-aliasing), then ``(x * 255).astype(uint8)``
  (floor).
* ``minmax_pil`` (U2-Net, ``u2net_test.py``): min-max normalised at the network size, ``x * 255`` made 8-bit by PIL
  (truncation), then resized to (W, H) with PIL's bilinear filter.  The release saves three equal channels (RGB);
  the one grey channel written here holds the same values.  A constant map (NaN in the release) is written as 0.
* ``cv2_round`` (PoolNet, SGL-KRN, ``solver.py``): ``255 * x`` at full resolution, made 8-bit as ``cv2.imwrite``
  converts a float image (round half to even, saturated to [0, 255], NaN -> 0).  A map not at the original size
  (only with ``INPUT.MAX_SIZE``, which the release does not have) is first resized bilinearly as floats.
"""
from __future__ import annotations

import os
from typing import Tuple

import cv2
import numpy as np

__all__ = ["SAVE_RULES", "saliency_to_uint8", "write_map"]


def _skimage_floor(sal: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize
    return (resize(sal, hw, mode="reflect", anti_aliasing=False) * 255).astype(np.uint8)


def _minmax_pil(sal: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    from PIL import Image
    lo, hi = sal.min(), sal.max()
    norm = (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)
    im = Image.fromarray(norm * 255).convert("L")  # mode F -> L truncates, as the release's F -> RGB does
    return np.asarray(im.resize((hw[1], hw[0]), resample=Image.BILINEAR))


def _cv2_round(sal: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    if sal.shape != tuple(hw):
        sal = cv2.resize(sal, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    x = np.nan_to_num(255 * sal, nan=0.0)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


SAVE_RULES = {"skimage_floor": _skimage_floor, "minmax_pil": _minmax_pil, "cv2_round": _cv2_round}


def saliency_to_uint8(sal, hw: Tuple[int, int], rule: str) -> np.ndarray:
    """``sal``: one saliency map in [0, 1] at the network's output size (array or tensor, [H', W'] or with leading
    1-dims); ``hw``: the original image size.  Returns the uint8 [H, W] map the release would have saved."""
    if rule not in SAVE_RULES:
        raise ValueError(f"unknown map-saving rule {rule!r}; known: {sorted(SAVE_RULES)}")
    if hasattr(sal, "detach"):
        sal = sal.detach().float().cpu().numpy()
    sal = np.asarray(sal, dtype=np.float32)
    while sal.ndim > 2 and sal.shape[0] == 1:
        sal = sal[0]
    if sal.ndim != 2:
        raise ValueError(f"expected one saliency map [H, W], got shape {sal.shape}")
    out = SAVE_RULES[rule](sal, (int(hw[0]), int(hw[1])))
    assert out.shape == tuple(hw) and out.dtype == np.uint8, (rule, out.shape, out.dtype)
    return out


def write_map(path: str, arr: np.ndarray) -> None:
    """Write a uint8 [H, W] map as a grey PNG; raises ``OSError`` naming the file when that fails."""
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ValueError(f"{path}: a saliency map is uint8 [H, W], got {arr.dtype} {arr.shape}")
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    try:
        ok = cv2.imwrite(path, arr)
    except cv2.error as exc:  # e.g. no encoder for the file extension
        raise OSError(f"cannot write saliency map {path}: {exc}") from exc
    if not ok:
        raise OSError(f"cannot write saliency map {path}")
