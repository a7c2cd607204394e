"""Scene layout of the synthetic data: which instances each image holds, where they go, and the rendering.

Instance sizes follow CarDD's buckets (small < 128^2 <= medium < 256^2 <= large pixels of mask area); with 512x384
images every split with at least three instances holds all three buckets. Classes are balanced over a split, with
1-3 instances per image and at most one large one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..categories import size_bucket
from .painters import CONTEXT_PLANNERS, PLANNERS, Plan, disk, paint_panel

__all__ = ["PAINTER_NAMES", "split_specs", "render"]

# Target mask areas per size bucket (kept away from the 128^2 / 256^2 edges so the bucket survives rasterisation).
_BUCKET_AREA = {"small": (1500.0, 10000.0), "medium": (20000.0, 46000.0), "large": (72000.0, 95000.0)}
_MAX_AREA_FRACTION = 0.45  # of the image

# Probability of (small, medium, large) per class, in CarDD order.
_BUCKET_PROBS = {
    "dent": (0.45, 0.35, 0.20),
    "scratch": (0.50, 0.30, 0.20),
    "crack": (0.75, 0.25, 0.0),
    "glass shatter": (0.15, 0.45, 0.40),
    "lamp broken": (0.35, 0.45, 0.20),
    "tire flat": (0.10, 0.50, 0.40),
}
_BUCKETS = ("small", "medium", "large")

# The damage kinds there are painters for, in CarDD's class order.
PAINTER_NAMES = tuple(_BUCKET_PROBS)


def _place(rng, plan: Plan, occupied: np.ndarray, tries: int = 40) -> Optional[Tuple[int, int]]:
    H, W = occupied.shape
    h, w = plan.mask.shape
    if h > H or w > W:
        return None
    for _ in range(tries):
        x0, y0 = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
        if not (occupied[y0 : y0 + h, x0 : x0 + w] & plan.footprint).any():
            return x0, y0
    return None


def _target_area(rng, bucket: str, W: int, H: int) -> float:
    lo, hi = _BUCKET_AREA[bucket]
    hi = min(hi, _MAX_AREA_FRACTION * W * H)
    lo = min(lo, 0.8 * hi)
    return float(rng.uniform(lo, hi))


def _plan_in_bucket(rng, cls: str, bucket: str, W: int, H: int) -> Plan:
    """Plan an instance whose mask area falls in ``bucket`` where the image size allows it."""
    area = _target_area(rng, bucket, W, H)
    plan = None
    for _ in range(5):
        plan = PLANNERS[cls](rng, area, W, H)
        got = float(plan.mask.sum())
        if size_bucket(got) == bucket or got <= 0:
            break
        area *= _target_area(rng, bucket, W, H) / got
    return plan


def render(rng, W: int, H: int, instances: Sequence[Tuple[str, str]], num_context: int):
    """Draw one image with ``num_context`` intact window/lamp/wheel objects where they fit.

    Returns (uint8 BGR image, [(category name, full-size bool mask), ...]).
    """
    img = paint_panel(rng, W, H)
    occupied = np.zeros((H, W), bool)
    out = []
    order = sorted(range(len(instances)), key=lambda i: -_BUCKETS.index(instances[i][1]))
    for i in order:
        cls, bucket = instances[i]
        plan = _plan_in_bucket(rng, cls, bucket, W, H)
        pos = _place(rng, plan, occupied)
        for _ in range(3):
            if pos is not None:
                break
            plan = PLANNERS[cls](rng, 0.75 * float(plan.mask.sum()), W, H)
            pos = _place(rng, plan, occupied)
        if pos is None:
            continue
        out.append(_apply(rng, img, occupied, plan, pos, cls))
    for _ in range(num_context):
        _add_context(rng, img, occupied)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), [o for o in out if o[1].any()]


def _apply(rng, img, occupied, plan: Plan, pos, cls):
    H, W = occupied.shape
    x0, y0 = pos
    h, w = plan.mask.shape
    crop = img[y0 : y0 + h, x0 : x0 + w].copy()
    plan.draw(crop, rng)
    fp = plan.footprint
    img[y0 : y0 + h, x0 : x0 + w][fp] = crop[fp]
    margin = cv2.dilate(fp.astype(np.uint8), disk(6)).astype(bool)
    occupied[y0 : y0 + h, x0 : x0 + w] |= margin
    full = np.zeros((H, W), bool)
    full[y0 : y0 + h, x0 : x0 + w] = plan.mask
    return cls, full


def _add_context(rng, img, occupied):
    H, W = occupied.shape
    planner = CONTEXT_PLANNERS[int(rng.integers(len(CONTEXT_PLANNERS)))]
    area = _target_area(rng, "small" if rng.random() < 0.5 else "medium", W, H)
    plan = planner(rng, area, W, H, broken=False)
    pos = _place(rng, plan, occupied, tries=20)
    if pos is not None:
        _apply(rng, img, occupied, plan, pos, "context")


def split_specs(rng, n_images: int, painters: Sequence[str] = PAINTER_NAMES) -> List[List[Tuple[str, str]]]:
    """(class, bucket) per instance per image: classes balanced, 1-3 instances, at most one large per image."""
    names = list(painters)
    pool: List[str] = []
    specs = []
    for _ in range(n_images):
        k = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
        inst = []
        for _ in range(k):
            if not pool:
                pool = list(rng.permutation(names))
            cls = str(pool.pop())
            inst.append([cls, str(rng.choice(_BUCKETS, p=_BUCKET_PROBS[cls]))])
        specs.append(inst)
    for inst in specs:
        _one_large(inst)
    flat = [(i, j) for i, inst in enumerate(specs) for j in range(len(inst))]
    if len(flat) >= 3:
        for bucket in _BUCKETS:
            if any(specs[i][j][1] == bucket for i, j in flat):
                continue
            counts = {b: sum(specs[i][j][1] == b for i, j in flat) for b in _BUCKETS}
            for i, j in flat:
                cls, old = specs[i][j]
                if counts[old] > 1 and _BUCKET_PROBS[cls][_BUCKETS.index(bucket)] > 0:
                    specs[i][j][1] = bucket
                    if bucket == "large":
                        specs[i] = [specs[i][j]] + [[c, "small"] for jj, (c, _) in enumerate(specs[i]) if jj != j]
                    break
    return [[tuple(x) for x in inst] for inst in specs]


def _one_large(inst):
    large = [j for j, (_, b) in enumerate(inst) if b == "large"]
    if large:
        for j in range(len(inst)):
            if j != large[0]:
                inst[j][1] = "small"


