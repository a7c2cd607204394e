"""CarDD's training/test augmentations, including DCN+'s multi-scale range resize.

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

import numpy as np
from PIL import Image

from detectron2.data import transforms as T
from detectron2.data.transforms import Augmentation, ResizeShortestEdge, ResizeTransform

__all__ = ["RangeResize", "build_cardd_train_augmentation", "build_cardd_test_augmentation"]


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
    from INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN / MIN_SIZE_TRAIN_SAMPLING."""
    rr = cfg.INPUT.RANGE_RESIZE
    if rr.ENABLED:
        return RangeResize(rr.WIDTH, tuple(rr.HEIGHT_RANGE), keep_ratio=rr.KEEP_RATIO)
    return ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
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
    return [ResizeShortestEdge(min_size, max_size, "choice")]
