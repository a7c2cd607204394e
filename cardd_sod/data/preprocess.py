"""Per-model input preprocessing: :class:`PreprocessSpec` (declared by each model's spec) and the transform.

Random augmentation draws from the generator it is given; the dataset seeds it with ``(seed, epoch, index)``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import cv2
import numpy as np

__all__ = ["PreprocessSpec", "IMAGENET_MEAN", "IMAGENET_STD", "CAFFE_BGR_MEAN", "preprocess_sample", "draw_edge_crop"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the caffe ResNet-50 mean (BGR, 0-255) of PoolNet and SGL-KRN
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Order: [train: edge crop, lr-or-ud flip on the original image] -> resize -> [train: crop, flips] ->
    colour order, scale, mean / std -> [train: rotation, on the normalised image: borders become 0]."""
    size: Optional[tuple] = None          # (H, W) resize; None = full resolution
    resize: str = "skimage"               # skimage (order 1) | cv2 (bilinear)
    skimage_mode: str = "constant"        # skimage: how pixels beyond the border are filled
    anti_aliasing: bool = True            # skimage: Gaussian pre-filter when shrinking
    label_resize: str = "bilinear"        # bilinear (cv2, soft labels) | nearest | like_image (the image's resize)
    crop: Optional[tuple] = None          # train random crop (H, W) after resize (U2-Net)
    edge_crop: int = 0                    # train, on the original: top/left U{0..n-1} px, bottom/right U{1..n} px
    hflip: float = 0.0                    # train flip probabilities
    vflip: float = 0.0
    flip_lr_or_ud: float = 0.0            # train, on the original: with this probability flip, lr or ud 50/50
    rotate_deg: int = 0                   # train: with probability rotate_p rotate by an integer angle in [-deg, deg)
    rotate_p: float = 0.0
    color: str = "rgb"                    # rgb | bgr
    scale: str = "255"                    # 255 (x/255) | max (x/max(x), U2-Net) | none (raw 0..255)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    label_scale: str = "255"              # 255 | max
    edges: bool = False                   # also return edge maps (SGL-KRN)
    max_size: int = 0                     # full resolution: cap the longer side (0 = off)
    save_rule: str = ""                   # test: how maps are written (cardd_sod.map_saving.SAVE_RULES)


def _resize_image(img: np.ndarray, hw: tuple, pp: PreprocessSpec, method: Optional[str] = None) -> np.ndarray:
    """float32 image resized to (H, W) with the spec's method (or ``method``)."""
    if tuple(img.shape[:2]) == tuple(hw):
        return img.astype(np.float32)
    if (method or pp.resize) == "skimage":
        from skimage.transform import resize
        return resize(img.astype(np.float64), hw, order=1, mode=pp.skimage_mode, preserve_range=True,
                      anti_aliasing=pp.anti_aliasing).astype(np.float32)
    return cv2.resize(img.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def _resize_label(lbl: np.ndarray, hw: tuple, pp: PreprocessSpec, method: Optional[str] = None) -> np.ndarray:
    method = method or pp.label_resize
    if tuple(lbl.shape[:2]) == tuple(hw):
        return lbl.astype(np.float32)
    if method == "like_image":
        return _resize_image(lbl, hw, pp)
    if method == "nearest":
        return cv2.resize(lbl.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(lbl.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def draw_edge_crop(rng: np.random.Generator, n: int) -> tuple:
    """(top, bottom, left, right) pixels to cut: top / left in 0..n-1, bottom / right in 1..n (CSNet release)."""
    top, left = (int(v) for v in rng.integers(0, n, size=2))
    bottom, right = (int(v) for v in rng.integers(1, n + 1, size=2))
    return top, bottom, left, right


def preprocess_sample(pp: PreprocessSpec, img: np.ndarray, mask: np.ndarray, edge: Optional[np.ndarray],
                      rng: np.random.Generator, train: bool):
    """RGB uint8 image, uint8 mask (and edge map) -> (image float32 [3,H,W], mask float32 [1,H,W] in [0,1],
    edge float32 [1,H,W] in [0,1] or None; soft where resampled)."""
    img = img.astype(np.float32)
    lbl = mask.astype(np.float32)
    if pp.label_scale == "max":
        lbl = lbl / lbl.max() if lbl.max() > 1e-6 else lbl
    else:
        lbl = lbl / 255.0
    maps = [lbl] + ([edge.astype(np.float32) / 255.0] if edge is not None else [])
    if train:
        img, maps = _augment_original(pp, img, maps, rng)
    if pp.size is not None:
        img = _resize_image(img, pp.size, pp)
        maps = [_resize_label(maps[0], pp.size, pp)] + [_resize_label(m, pp.size, pp, "nearest") for m in maps[1:]]
    elif pp.max_size and max(img.shape[:2]) > pp.max_size:
        r = pp.max_size / max(img.shape[:2])
        hw = (max(1, round(img.shape[0] * r)), max(1, round(img.shape[1] * r)))
        img = _resize_image(img, hw, pp, "cv2")
        maps = [_resize_label(maps[0], hw, pp, "bilinear")] + [_resize_label(m, hw, pp, "nearest") for m in maps[1:]]
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
    if train and pp.rotate_p > 0 and rng.random() < pp.rotate_p:
        img, maps = _rotate(img, maps, int(rng.integers(-pp.rotate_deg, pp.rotate_deg)))
    out_img = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    out_mask = np.ascontiguousarray(np.clip(maps[0], 0, 1)[None], dtype=np.float32)
    out_edge = np.ascontiguousarray(np.clip(maps[1], 0, 1)[None], dtype=np.float32) if edge is not None else None
    return out_img, out_mask, out_edge


def _augment_original(pp: PreprocessSpec, img, maps, rng):
    """CSNet: cut the borders and flip before resizing."""
    if pp.edge_crop > 0:
        t, b, l, r = draw_edge_crop(rng, pp.edge_crop)
        h, w = img.shape[:2]
        if t + b >= h or l + r >= w:
            raise ValueError(f"image of {w}x{h} px is too small for a {pp.edge_crop} px edge crop")
        img = img[t:h - b, l:w - r]
        maps = [m[t:h - b, l:w - r] for m in maps]
    if pp.flip_lr_or_ud > 0 and rng.random() < pp.flip_lr_or_ud:
        if rng.random() < 0.5:
            img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
        else:
            img, maps = img[::-1], [m[::-1] for m in maps]
    return img, maps


def _augment(pp: PreprocessSpec, img, maps, rng):
    h, w = img.shape[:2]
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
    return img, maps


def _rotate(img, maps, angle: int):
    """Rotation about (w/2, h/2), bilinear, zero borders (SGL-KRN release, applied to the normalised image)."""
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    img = cv2.warpAffine(np.ascontiguousarray(img), rot, (w, h))
    maps = [cv2.warpAffine(np.ascontiguousarray(m), rot, (w, h)) for m in maps]
    return img, maps
