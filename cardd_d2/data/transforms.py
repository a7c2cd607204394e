"""CarDD's training/test augmentations, including DCN+'s multi-scale range resize.

Resize backend (``INPUT.RESIZE_BACKEND``): "pil" is detectron2's ``ResizeTransform`` (PIL, which antialiases when it
shrinks); "cv2" is ``cv2.resize`` with ``INTER_LINEAR`` for images and ``INTER_NEAREST`` for masks, what mmdetection's
``Resize`` does with its default backend (the released configs' single-scale train and test resize). The DCN+ range
resize keeps PIL: the released one asks for mmdetection's 'pillow' backend, which is the same PIL call.

``RangeResize`` reproduces mmdet's ``Resize(img_scale=[(W, H_min), (W, H_max)], multiscale_mode='range',
keep_ratio=False, backend='pillow')``: the image becomes exactly ``W`` wide and ``H`` high with ``H`` a uniform
integer in ``[H_min, H_max]`` (both inclusive), bilinear, aspect ratio not kept. Boxes, polygons and masks follow
through detectron2's ``ResizeTransform``. With ``keep_ratio=True`` it draws the same random number and resizes like
detectron2's ``ResizeShortestEdge((H_min, H_max), max_size=W, sample_style="range")``, which is what mmdet's
keep-ratio range mode does.
"""
from __future__ import annotations

import sys
from typing import List, Sequence

import cv2
import numpy as np
from PIL import Image

from detectron2.data import transforms as T
from detectron2.data.transforms import Augmentation, ResizeShortestEdge, ResizeTransform

__all__ = [
    "CV2ResizeTransform",
    "CarDDResizeShortestEdge",
    "RangeResize",
    "build_cardd_train_augmentation",
    "build_cardd_test_augmentation",
]

RESIZE_BACKENDS = ("pil", "cv2")
_CV2_INTERP = {Image.NEAREST: cv2.INTER_NEAREST, Image.BILINEAR: cv2.INTER_LINEAR, Image.BICUBIC: cv2.INTER_CUBIC}


class CV2ResizeTransform(ResizeTransform):
    """``ResizeTransform`` that resizes pixels with ``cv2.resize`` (no antialiasing, as mmcv.imresize's cv2 backend);
    coordinates, boxes and polygons are scaled exactly as by the parent."""

    def apply_image(self, img, interp=None):
        assert img.shape[:2] == (self.h, self.w), f"expected an image of {(self.h, self.w)}, got {img.shape[:2]}"
        interp = interp if interp is not None else self.interp
        if interp not in _CV2_INTERP:
            raise ValueError(f"CV2ResizeTransform: no cv2 equivalent of PIL interpolation {interp}")
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=_CV2_INTERP[interp])
        if img.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
            out = out[:, :, None]
        return out

    def inverse(self):
        return CV2ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


def _with_backend(t: ResizeTransform, backend: str) -> ResizeTransform:
    return CV2ResizeTransform(t.h, t.w, t.new_h, t.new_w, t.interp) if backend == "cv2" else t


class CarDDResizeShortestEdge(ResizeShortestEdge):
    """detectron2's ``ResizeShortestEdge`` (same sizes, same random draws) with a choice of resize backend."""

    def __init__(self, short_edge_length, max_size=sys.maxsize, sample_style="range", interp=Image.BILINEAR,
                 *, backend: str = "pil"):
        super().__init__(short_edge_length, max_size, sample_style, interp)
        if backend not in RESIZE_BACKENDS:
            raise ValueError(f"INPUT.RESIZE_BACKEND: unknown value {backend!r}; expected one of {RESIZE_BACKENDS}")
        self.backend = backend

    def get_transform(self, image):
        return _with_backend(super().get_transform(image), self.backend)


class RangeResize(Augmentation):
    """Resize to width ``width`` and a height drawn uniformly from ``height_range`` (inclusive).

    Args:
        width: output width (mmdet's long edge of ``img_scale``), e.g. 1333.
        height_range: ``(min, max)`` output heights, e.g. ``(640, 1200)``.
        keep_ratio: False (released DCN+): aspect not kept. True: short edge = the drawn height, long edge capped at
            ``width``, as ``ResizeShortestEdge(height_range, width, "range")``.
        interp: PIL interpolation (bilinear as mmdet's pillow backend).
    """

    def __init__(self, width: int, height_range: Sequence[int], keep_ratio: bool = False, interp=Image.BILINEAR):
        super().__init__()
        if len(height_range) != 2:
            raise ValueError(f"RangeResize: height_range must be (min, max), got {tuple(height_range)}")
        lo, hi = int(height_range[0]), int(height_range[1])
        if not (0 < lo <= hi):
            raise ValueError(f"RangeResize: need 0 < min <= max in height_range, got {(lo, hi)}")
        if int(width) <= 0:
            raise ValueError(f"RangeResize: width must be > 0, got {width}")
        self.width = int(width)
        self.height_range = (lo, hi)
        self.keep_ratio = bool(keep_ratio)
        self.interp = interp

    def sample_height(self) -> int:
        # Same draw as ResizeShortestEdge's range mode, so keep_ratio=True matches it under a shared seed.
        return int(np.random.randint(self.height_range[0], self.height_range[1] + 1))

    def get_transform(self, image):
        h, w = image.shape[:2]
        size = self.sample_height()
        if self.keep_ratio:
            new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, size, self.width)
        else:
            new_h, new_w = size, self.width
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    def __repr__(self):
        return (
            f"RangeResize(width={self.width}, height_range={self.height_range}, keep_ratio={self.keep_ratio})"
        )


def _flip_augmentations(cfg) -> List[Augmentation]:
    mode = cfg.INPUT.RANDOM_FLIP
    if mode == "none":
        return []
    if mode not in ("horizontal", "vertical"):
        raise ValueError(f"INPUT.RANDOM_FLIP: unknown value {mode!r}; expected 'horizontal', 'vertical' or 'none'")
    return [T.RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")]


def build_train_resize(cfg) -> Augmentation:
    """The training resize: ``RangeResize`` when INPUT.RANGE_RESIZE.ENABLED, else detectron2's ResizeShortestEdge
    from INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN / MIN_SIZE_TRAIN_SAMPLING with INPUT.RESIZE_BACKEND."""
    rr = cfg.INPUT.RANGE_RESIZE
    if rr.ENABLED:
        return RangeResize(rr.WIDTH, tuple(rr.HEIGHT_RANGE), keep_ratio=rr.KEEP_RATIO)
    return CarDDResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
        backend=cfg.INPUT.RESIZE_BACKEND,
    )


def build_cardd_train_augmentation(cfg) -> List[Augmentation]:
    """[crop (only if INPUT.CROP.ENABLED, as detectron2's DatasetMapper adds it), resize, flip] for training."""
    augs: List[Augmentation] = []
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    augs.append(build_train_resize(cfg))
    augs.extend(_flip_augmentations(cfg))
    return augs


def build_cardd_test_augmentation(cfg) -> List[Augmentation]:
    """Keep-ratio resize to (MAX_SIZE_TEST, MIN_SIZE_TEST), no flip (mmdet's (1333, 800) test pipeline)."""
    min_size = cfg.INPUT.MIN_SIZE_TEST
    if min_size == 0:
        return []
    max_size = cfg.INPUT.MAX_SIZE_TEST or sys.maxsize
    return [CarDDResizeShortestEdge(min_size, max_size, "choice", backend=cfg.INPUT.RESIZE_BACKEND)]
