"""Per-model input preprocessing: :class:`PreprocessSpec` (declared by each model's spec) and the transform.

Random augmentation draws from the generator it is given; the dataset seeds it with ``(seed, epoch, index)``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import cv2
import numpy as np

__all__ = ["PreprocessSpec", "IMAGENET_MEAN", "IMAGENET_STD", "CAFFE_BGR_MEAN", "preprocess_sample"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the caffe ResNet-50 mean (BGR, 0-255) of PoolNet and SGL-KRN
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    size: Optional[tuple] = None          # (H, W) resize; None = full resolution
    resize: str = "skimage"               # skimage (order-1, anti-aliased) | cv2
    label_resize: str = "bilinear"        # bilinear (soft labels) | nearest
    crop: Optional[tuple] = None          # train random crop (H, W) after resize (U2-Net)
    side_crop: int = 0                    # train: crop 0..side_crop px per side, then resize back (CSNet)
    hflip: float = 0.0                    # train flip probabilities
    vflip: float = 0.0
    flip_lr_or_ud: float = 0.0            # CSNet: with this probability flip, lr or ud with equal chance
    rotate_deg: float = 0.0               # train: with probability rotate_p rotate by U(-deg, deg) (SGL-KRN release)
    rotate_p: float = 0.0
    color: str = "rgb"                    # rgb | bgr
    scale: str = "255"                    # 255 (x/255) | max (x/max(x), U2-Net) | none (raw 0..255)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    label_scale: str = "255"              # 255 | max
    edges: bool = False                   # also return edge maps (SGL-KRN)
    max_size: int = 0                     # full resolution: cap the longer side (0 = off)
    save_rule: str = ""                   # test: how maps are written (cardd_sod.map_saving.SAVE_RULES)


def _resize_image(img: np.ndarray, hw: tuple, method: str) -> np.ndarray:
    """float32 image resized to (H, W)."""
    if tuple(img.shape[:2]) == tuple(hw):
        return img.astype(np.float32)
    if method == "skimage":
        from skimage.transform import resize
        return resize(img.astype(np.float64), hw, order=1, mode="constant", preserve_range=True,
                      anti_aliasing=True).astype(np.float32)
    return cv2.resize(img.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def _resize_label(lbl: np.ndarray, hw: tuple, method: str) -> np.ndarray:
    if tuple(lbl.shape[:2]) == tuple(hw):
        return lbl.astype(np.float32)
    if method == "nearest":
        return cv2.resize(lbl.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(lbl.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def preprocess_sample(pp: PreprocessSpec, img: np.ndarray, mask: np.ndarray, edge: Optional[np.ndarray],
                      rng: np.random.Generator, train: bool):
    """RGB uint8 image, uint8 mask (and edge map) -> (image float32 [3,H,W], mask float32 [1,H,W] in [0,1],
    edge float32 [1,H,W] in {0,1} or None)."""
    img = img.astype(np.float32)
    lbl = mask.astype(np.float32)
    edg = edge.astype(np.float32) if edge is not None else None
    if pp.label_scale == "max":
        lbl = lbl / lbl.max() if lbl.max() > 1e-6 else lbl
    else:
        lbl = lbl / 255.0
    if edg is not None:
        edg = edg / 255.0
    if pp.size is not None:
        img = _resize_image(img, pp.size, pp.resize)
        lbl = _resize_label(lbl, pp.size, pp.label_resize)
        if edg is not None:
            edg = _resize_label(edg, pp.size, "nearest")
    elif pp.max_size and max(img.shape[:2]) > pp.max_size:
        r = pp.max_size / max(img.shape[:2])
        hw = (max(1, round(img.shape[0] * r)), max(1, round(img.shape[1] * r)))
        img = _resize_image(img, hw, "cv2")
        lbl = _resize_label(lbl, hw, "bilinear")
        if edg is not None:
            edg = _resize_label(edg, hw, "nearest")
    maps = [lbl] + ([edg] if edg is not None else [])
    if train:
        img, maps = _augment(pp, img, maps, rng)
    if pp.color == "bgr":
        img = img[:, :, ::-1]  # mean / std are given in the spec's channel order
    if pp.scale == "max":
        m = img.max()
        img = img / m if m > 0 else img
    elif pp.scale == "255":
        img = img / 255.0
    img = (img - np.asarray(pp.mean, np.float32)) / np.asarray(pp.std, np.float32)
    out_img = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    out_mask = np.ascontiguousarray(np.clip(maps[0], 0, 1)[None], dtype=np.float32)
    out_edge = np.ascontiguousarray((maps[1] > 0.5)[None], dtype=np.float32) if edg is not None else None
    return out_img, out_mask, out_edge


def _augment(pp: PreprocessSpec, img, maps, rng):
    h, w = img.shape[:2]
    if pp.side_crop > 0:
        t, b, l, r = (int(v) for v in rng.integers(0, pp.side_crop + 1, size=4))
        if h - t - b >= 2 and w - l - r >= 2:
            img = img[t:h - b, l:w - r]
            maps = [m[t:h - b, l:w - r] for m in maps]
            img = _resize_image(img, (h, w), "cv2")
            maps = [_resize_label(m, (h, w), pp.label_resize) for m in maps]
    if pp.crop is not None:
        ch, cw = pp.crop
        if h < ch or w < cw:
            raise ValueError(f"crop {pp.crop} larger than the resized image {(h, w)}")
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        img = img[top:top + ch, left:left + cw]
        maps = [m[top:top + ch, left:left + cw] for m in maps]
    if pp.hflip > 0 and rng.random() < pp.hflip:
        img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
    if pp.vflip > 0 and rng.random() < pp.vflip:
        img, maps = img[::-1], [m[::-1] for m in maps]
    if pp.rotate_p > 0 and rng.random() < pp.rotate_p:
        angle = float(rng.uniform(-pp.rotate_deg, pp.rotate_deg))
        hh, ww = img.shape[:2]
        rot = cv2.getRotationMatrix2D(((ww - 1) / 2.0, (hh - 1) / 2.0), angle, 1.0)
        img = cv2.warpAffine(np.ascontiguousarray(img), rot, (ww, hh), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        maps = [cv2.warpAffine(np.ascontiguousarray(m), rot, (ww, hh), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0) for m in maps]
    if pp.flip_lr_or_ud > 0 and rng.random() < pp.flip_lr_or_ud:
        if rng.random() < 0.5:
            img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
        else:
            img, maps = img[::-1], [m[::-1] for m in maps]
    return img, maps
