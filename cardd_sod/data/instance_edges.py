"""Edge maps of SGL-KRN's contour targets, drawn from the instance polygons as the released data generator does.

For each instance only the first polygon of its segmentation is used; each polygon side (closing side included) is
walked twice:

* along x: for every integer column between the rounded end points (Python ``round``, half to even) the side's
  height ``y`` at that column is computed and the pixels ``(floor(y), x)`` and ``(ceil(y), x)`` are set;
* along y: likewise for every integer row, pixels ``(y, floor(x))`` and ``(y, ceil(x))``.

Sides parallel to the walked axis are skipped in that walk.  The released generator's index arithmetic is kept as
is, because it decides which pixels are edges:

* a walk with increasing coordinate stops before ``size - 1`` (the last row / column is reached only by walks that
  start from it), a decreasing walk starts at ``min(round(start), size - 1)`` and includes ``round(end)``;
* the computed coordinate is capped at ``size - 1`` but not at 0: a value in ``[-size, 0)`` wraps to the opposite
  border as numpy indexing does; below ``-size`` the pixel and its ceil partner are skipped.

Instances without polygons (RLE / crowd segmentations, empty lists) have no outline.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = ["polygon_outline_edges", "instance_outline_edges"]


def _put(edge: np.ndarray, r: int, c: int) -> bool:
    h, w = edge.shape
    if -h <= r < h and -w <= c < w:
        edge[r, c] = 255
        return True
    return False


def _walk(a0: float, a1: float, size: int) -> range:
    if a1 > a0:
        return range(round(a0), min(round(a1) + 1, size - 1))
    return range(min(round(a0), size - 1), max(round(a1) - 1, -1), -1)


def polygon_outline_edges(edge: np.ndarray, polygon: Sequence[float]) -> None:
    """Draw one polygon ``[x0, y0, x1, y1, ...]`` (pixel coordinates) into the uint8 map ``edge`` (255 = edge)."""
    h, w = edge.shape
    pts = [(float(polygon[2 * i]), float(polygon[2 * i + 1])) for i in range(len(polygon) // 2)]
    sides = [(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
    for (xi, yi), (xj, yj) in sides:        # along x
        if xj == xi:
            continue
        k = (yj - yi) / (xj - xi)
        for x in _walk(xi, xj, w):
            y = yi + k * (x - xi)
            _put(edge, min(math.floor(y), h - 1), x) and _put(edge, min(math.ceil(y), h - 1), x)
    for (xi, yi), (xj, yj) in sides:        # along y
        if yj == yi:
            continue
        k = (xj - xi) / (yj - yi)
        for y in _walk(yi, yj, h):
            x = xi + k * (y - yi)
            _put(edge, y, min(math.floor(x), w - 1)) and _put(edge, y, min(math.ceil(x), w - 1))


def instance_outline_edges(anns: Iterable[dict], height: int, width: int) -> np.ndarray:
    """uint8 {0, 255} edge map of COCO annotations ``anns``: the outline of each one's first polygon."""
    edge = np.zeros((int(height), int(width)), np.uint8)
    for ann in anns:
        seg = ann.get("segmentation")
        if isinstance(seg, list) and seg and isinstance(seg[0], (list, tuple)):
            polygon_outline_edges(edge, seg[0])
    return edge
