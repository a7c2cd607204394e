"""A small synthetic stand-in for CarDD, written in the official on-disk layouts.

The real CarDD dataset is licence-restricted and never used by the tests; ``make_synthetic_cardd`` draws
car-body-panel images with the six CarDD damage classes and writes them exactly where the real release
keeps its files::

    <root>/CarDD_COCO/train2017/000001.jpg ...            six-digit names, numbered 1..N across train, val, test
    <root>/CarDD_COCO/val2017/..., test2017/...
    <root>/CarDD_COCO/annotations/instances_{train,val,test}2017.json
    <root>/CarDD_SOD/CarDD-TR/CarDD-TR-Image/000001.jpg    the same JPEG bytes as CarDD_COCO
    <root>/CarDD_SOD/CarDD-TR/CarDD-TR-Mask/000001.png     union of the instance masks, 255 damage / 0 background
    <root>/CarDD_SOD/CarDD-TR/train_pair.lst
    <root>/CarDD_SOD/CarDD-{VAL,TE}/CarDD-{VAL,TE}-{Image,Mask}/..., CarDD-{VAL,TE}/test.lst
    <root>/undamaged/0000NN.jpg                            optional damage-free images (numbers continue after test)

List files (the DUTS / PoolNet convention):

* ``train_pair.lst``: one line per training image, ``<image path> <mask path>`` separated by one space, both
  relative to the ``CarDD-TR`` folder, e.g. ``CarDD-TR-Image/000001.jpg CarDD-TR-Mask/000001.png``.
* ``test.lst`` (in ``CarDD-VAL`` and ``CarDD-TE``): one image file name per line, relative to the split's
  ``-Image`` folder, e.g. ``000031.jpg``; the mask is the same stem with ``.png`` in the ``-Mask`` folder.

Every line ends with ``\\n``; lines are sorted by file name.

COCO json: categories ids 1..6 in CarDD order with supercategory "car damages"; every annotation has a
polygon ``segmentation`` (list of ``[x1, y1, x2, y2, ...]`` lists, each with >= 3 points and non-zero area),
``area`` = the area of that polygon mask as pycocotools rasterises it, ``bbox`` = ``[x, y, w, h]`` tight around the
polygon points, ``iscrowd`` 0 and ``attributes`` ``{"occluded": false}``.

Appearance (chosen so that Mask R-CNN can tell the classes apart from random initialisation):

* dent: a shaded elliptical hollow, dark on one side, lit on the other, with a specular highlight.
* scratch: a band of thin, long, nearly parallel light strokes over a lightly scuffed area.
* crack: dark jagged branching lines in a strip of chipped (primer-grey) paint.
* glass shatter: a dark-blue window with a radial / concentric web of white cracks and frosted cells
  (the whole window is the instance).
* lamp broken: a bright lamp (head, tail or indicator colours) with dark holes, cracks and shards.
* tire flat: a dark tyre with a silver rim whose bottom bulges sideways and is flattened on the ground.

Intact windows, lamps and wheels appear as unannotated context in some damaged images and in the undamaged
images. Instance sizes follow CarDD's buckets (small < 128^2 <= medium < 256^2 <= large pixels of mask area);
with the default 512x384 images every split with at least three instances holds all three buckets.

Output is a pure function of the arguments: the same call writes byte-identical files.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .categories import CARDD_AREA_SMALL, CARDD_CATEGORIES, size_bucket

__all__ = ["make_synthetic_cardd", "mask_to_polygons", "polygons_area_bbox", "SPLITS", "SOD_SPLITS"]

SPLITS = ("train", "val", "test")
SOD_SPLITS = {"train": "CarDD-TR", "val": "CarDD-VAL", "test": "CarDD-TE"}
JPEG_QUALITY = 95

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

# Car paints (BGR), mid to dark so that light scratches and bright lamps stand out.
_PAINTS = np.array(
    [
        [150, 150, 152], [110, 112, 115], [60, 60, 64], [40, 40, 150], [140, 80, 30], [60, 100, 50],
        [30, 110, 180], [120, 60, 90], [95, 130, 140], [170, 160, 140], [50, 30, 110], [150, 120, 80],
    ],
    dtype=np.float32,
)


# ----------------------------------------------------------------------------------------------- geometry helpers
def mask_to_polygons(mask: np.ndarray, min_area: float = 4.0, epsilon: float = 0.7) -> List[List[float]]:
    """Outer contours of a binary mask as COCO polygons ``[[x1, y1, x2, y2, ...], ...]``.

    Each polygon has >= 3 points and a positive area of at least ``min_area``; holes are filled.
    """
    m = np.ascontiguousarray(mask.astype(np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, epsilon, True).reshape(-1, 2)
        if len(c) < 3 or abs(cv2.contourArea(c.astype(np.float32))) < min_area:
            continue
        polys.append([float(v) for v in c.reshape(-1)])
    return polys


def polygons_area_bbox(polygons: Sequence[Sequence[float]], height: int, width: int) -> Tuple[float, List[float]]:
    """(area of the rasterised polygon mask as pycocotools computes it, tight xywh bbox around the points)."""
    rles = mask_utils.frPyObjects([list(p) for p in polygons], height, width)
    area = float(mask_utils.area(mask_utils.merge(rles)))
    pts = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons])
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    return area, [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]], dtype=np.float64)  # row vectors: (x c - y s, x s + y c)


def _fill(h: int, w: int, polys: Sequence[np.ndarray]) -> np.ndarray:
    layer = np.zeros((h, w), np.uint8)
    cv2.fillPoly(layer, [np.round(p).astype(np.int32).reshape(-1, 1, 2) for p in polys], 1)
    return layer.astype(bool)


def _lines(h: int, w: int, lines: Sequence[np.ndarray], thickness: int, aa: bool = True, closed: bool = False):
    """Anti-aliased polylines as an alpha layer in [0, 1]."""
    layer = np.zeros((h, w), np.uint8)
    pts = [np.round(p * 16).astype(np.int32).reshape(-1, 1, 2) for p in lines if len(p) >= 2]
    if pts:
        cv2.polylines(layer, pts, closed, 255, thickness, cv2.LINE_AA if aa else cv2.LINE_8, shift=4)
    return layer.astype(np.float32) / 255.0


def _blend(crop: np.ndarray, color, alpha: np.ndarray) -> None:
    """crop = (1 - alpha) * crop + alpha * color, in place, touching only pixels with alpha > 0."""
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return
    a = np.minimum(alpha[ys, xs], 1.0)[:, None].astype(np.float32)
    col = np.asarray(color, dtype=np.float32)
    if col.ndim == 3:
        col = col[ys, xs]
    crop[ys, xs] = crop[ys, xs] * (1.0 - a) + a * col


def _disk(r: int) -> np.ndarray:
    r = max(1, int(r))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _interior_point(rng: np.random.Generator, mask: np.ndarray, shrink: float = 0.35) -> Tuple[float, float]:
    """A random pixel well inside ``mask`` (x, y)."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    inner = dist >= shrink * dist.max()
    ys, xs = np.nonzero(inner)
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def _jagged_ray(rng, start, angle, length, step=7.0, jitter=0.35, revert=0.5) -> np.ndarray:
    pts = [np.asarray(start, dtype=np.float64)]
    a = angle
    n = max(2, int(length / step))
    for _ in range(n):
        a = a + rng.normal(0.0, jitter) - revert * (a - angle)
        pts.append(pts[-1] + step * np.array([math.cos(a), math.sin(a)]))
    return np.array(pts)


# ----------------------------------------------------------------------------------------------- object plans
@dataclass
class _Plan:
    """One object drawn into an (h, w) crop: ``mask`` is the damage (annotated) region, ``footprint`` everything it
    paints, ``draw(crop, rng)`` paints the float32 BGR crop in place."""

    mask: np.ndarray
    footprint: np.ndarray
    draw: Callable[[np.ndarray, np.random.Generator], None]


def _plan_dent(rng, area, W, H, broken=True) -> _Plan:
    ratio = rng.uniform(1.0, 1.7)
    b = math.sqrt(area / (math.pi * ratio))
    a = ratio * b
    ang = rng.uniform(0, math.pi)
    c, s = math.cos(ang), math.sin(ang)
    ex, ey = math.hypot(a * c, b * s), math.hypot(a * s, b * c)
    m = 4
    w, h = int(2 * ex) + 2 * m + 1, int(2 * ey) + 2 * m + 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - (w - 1) / 2, yy - (h - 1) / 2
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    r2 = u * u + v * v
    mask = r2 <= 1.0
    light = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.45, 0.7)

    def draw(crop, rng):
        depth = np.clip(1.0 - r2, 0.0, None)
        gy, gx = np.gradient(depth)
        shade = gx * math.cos(light) + gy * math.sin(light)
        shade /= np.abs(shade[mask]).max() + 1e-6
        factor = 1.0 + (strength * shade - 0.15 * depth) * mask
        crop *= factor[..., None]
        iy, ix = np.unravel_index(np.argmax(np.where(mask, shade, -9)), shade.shape)
        sig = 0.15 * min(a, b) + 1.0
        spot = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sig * sig)) * mask
        crop += 80.0 * spot[..., None]
        rim = (r2 > 0.86) & mask
        crop[rim] *= 0.85

    return _Plan(mask, mask, draw)


def _plan_scratch(rng, area, W, H, broken=True) -> _Plan:
    for _ in range(12):
        k = rng.uniform(3.0, 10.0)
        wb = math.sqrt(area / k)
        length = k * wb
        ang = rng.uniform(-math.pi / 3, math.pi / 3)
        c, s = abs(math.cos(ang)), abs(math.sin(ang))
        bw, bh = length * c + wb * s, length * s + wb * c
        if bw < W - 16 and bh < H - 16:
            break
    else:
        ang = 0.0
        length = min(length, W - 20.0)
        wb = min(area / length, H - 20.0)
        bw, bh = length, wb
    m = 4
    w, h = int(bw) + 2 * m + 1, int(bh) + 2 * m + 1
    n = int(np.clip(round(wb / 6) + 1, 2, 28))
    offsets = np.sort(np.concatenate([[-wb / 2 + 1, wb / 2 - 1], rng.uniform(-wb / 2, wb / 2, n - 2)]))
    strokes = []
    for i, o in enumerate(offsets):
        edge = i in (0, len(offsets) - 1)
        s0 = -length / 2 + 1 + (0 if edge else rng.uniform(0, 0.15 * length))
        s1 = length / 2 - 1 - (0 if edge else rng.uniform(0, 0.15 * length))
        t = np.linspace(0, 1, 14)
        bend = rng.normal(0, 0.03 * wb + 0.5)
        along = s0 + (s1 - s0) * t
        across = np.clip(o + bend * np.sin(math.pi * t), -wb / 2, wb / 2)
        strokes.append(_rotate(np.stack([along, across], 1), ang) + [(w - 1) / 2, (h - 1) / 2])
    thickness = int(rng.integers(1, 3))
    layer = _lines(h, w, strokes, thickness)
    ys, xs = np.nonzero(layer > 0.25)
    hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    mask = mask.astype(bool)
    color = np.full(3, rng.uniform(225, 252), np.float32) + rng.uniform(-6, 6, 3).astype(np.float32)
    opacity = rng.uniform(0.75, 0.95)

    def draw(crop, rng):
        scuff = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2.0)
        _blend(crop, (215, 215, 215), 0.12 * scuff)
        _blend(crop, color, opacity * layer)

    return _Plan(mask, mask, draw)


def _plan_crack(rng, area, W, H, broken=True) -> _Plan:
    zone = rng.uniform(7, 11) if area < CARDD_AREA_SMALL else rng.uniform(12, 18)
    total = 1.1 * area / zone
    for _ in range(8):
        d0 = rng.uniform(0, 2 * math.pi)
        trunk = _jagged_ray(rng, (0.0, 0.0), d0, 0.45 * total, step=7.0, jitter=0.45, revert=0.3)
        lines = [trunk]
        left = 0.55 * total
        while left > 20:
            base = lines[int(rng.integers(len(lines)))]
            p = base[int(rng.integers(1, len(base)))]
            seg = base[-1] - base[0]
            ang = math.atan2(seg[1], seg[0]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            ln = min(left, rng.uniform(0.15, 0.35) * total + 15)
            lines.append(_jagged_ray(rng, p, ang, ln, step=6.0, jitter=0.5, revert=0.3))
            left -= ln
        pts = np.concatenate(lines)
        lo, hi = pts.min(0), pts.max(0)
        m = zone / 2 + 4
        w, h = int(hi[0] - lo[0] + 2 * m) + 1, int(hi[1] - lo[1] + 2 * m) + 1
        if w < W - 8 and h < H - 8:
            break
        total *= 0.8
    lines = [ln - lo + m for ln in lines]
    layer = _lines(h, w, lines, 2, aa=False)
    fine = _lines(h, w, lines, 1, aa=True)
    zmask = cv2.dilate((layer > 0).astype(np.uint8), _disk(zone / 2))
    zmask = cv2.GaussianBlur(zmask.astype(np.float32), (0, 0), 1.5) > 0.5
    primer = np.array([rng.uniform(150, 185)] * 3, np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
    dark = rng.uniform(15, 40)

    def draw(crop, rng):
        soft = cv2.GaussianBlur(zmask.astype(np.float32), (0, 0), 1.0)
        tex = 0.35 + 0.2 * rng.random(soft.shape).astype(np.float32)
        _blend(crop, primer, soft * tex)
        _blend(crop, (dark, dark, dark + 5), 0.9 * layer)
        _blend(crop, (dark, dark, dark), 0.5 * fine)

    return _Plan(zmask, zmask, draw)


def _plan_window(rng, area, W, H, broken=True) -> _Plan:
    for _ in range(10):
        aspect = rng.uniform(1.4, 2.0)
        taper = rng.uniform(0.65, 0.9)
        slant = rng.uniform(-0.15, 0.15)
        h0 = math.sqrt(2 * area / (aspect * (1 + taper)))
        w0 = aspect * h0
        f = 5
        quad = np.array(
            [[0, h0], [w0, h0], [w0 / 2 + taper * w0 / 2 + slant * w0, 0], [w0 / 2 - taper * w0 / 2 + slant * w0, 0]]
        )
        quad -= quad.min(0) - f - 1
        w, h = int(quad[:, 0].max()) + f + 3, int(quad[:, 1].max()) + f + 3
        if w < W - 4 and h < H - 4:
            break
        area *= 0.85
    mask = _fill(h, w, [quad])
    footprint = cv2.dilate(mask.astype(np.uint8), _disk(f)).astype(bool)
    top = np.array([rng.uniform(95, 130), rng.uniform(60, 85), rng.uniform(25, 45)], np.float32)
    bottom = top * rng.uniform(0.5, 0.7)
    refl = rng.uniform(-1, 1)

    def draw(crop, rng):
        _blend(crop, (22, 22, 24), (footprint & ~mask).astype(np.float32))
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        glass = top * (1 - t) + bottom * t
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        band = np.exp(-(((xx - refl * yy - 0.4 * w) / (0.12 * w + 2)) ** 2)).astype(np.float32)
        glass = glass + 35.0 * band[..., None]
        crop[mask] = glass[mask]
        if not broken:
            return
        px, py = _interior_point(rng, mask, 0.3)
        diag = math.hypot(w, h)
        n = int(rng.integers(9, 17))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        rays = [_jagged_ray(rng, (px, py), a, diag, step=8.0, jitter=0.08, revert=0.2) for a in angles]
        rings = []
        r = rng.uniform(6, 14)
        while r < diag:
            ring = []
            for ray in rays:
                j = min(len(ray) - 1, int(r * rng.uniform(0.85, 1.15) / 8.0))
                ring.append(ray[j])
            rings.append(np.array(ring))
            r *= rng.uniform(1.4, 1.8)
        cells = np.zeros((h, w), np.float32)
        for a_i in range(len(rings) - 1):
            for k in range(n):
                if rng.random() < 0.3:
                    cell = np.array([rings[a_i][k], rings[a_i][(k + 1) % n], rings[a_i + 1][(k + 1) % n],
                                     rings[a_i + 1][k]])
                    cells = np.maximum(cells, _fill(h, w, [cell]).astype(np.float32) * rng.uniform(0.15, 0.35))
        web = np.maximum(_lines(h, w, rays, 1), _lines(h, w, rings, 1, closed=True))
        dist = np.hypot(xx - px, yy - py)
        frost = 0.45 * np.exp(-dist / (0.35 * diag))
        mf = mask.astype(np.float32)
        _blend(crop, (200, 200, 196), np.maximum(frost, cells) * mf)
        _blend(crop, (232, 235, 238), 0.9 * web * mf)

    return _Plan(mask, footprint, draw)


def _plan_lamp(rng, area, W, H, broken=True) -> _Plan:
    n = rng.uniform(2.2, 4.0)
    ratio = rng.uniform(1.4, 2.6)
    g = 4 * math.gamma(1 + 1 / n) ** 2 / math.gamma(1 + 2 / n)
    taper = rng.uniform(0.0, 0.35)
    ang = rng.uniform(-0.35, 0.35)
    for _ in range(10):
        b = math.sqrt(area / (ratio * g))
        a = ratio * b
        t = np.linspace(0, 2 * math.pi, 120, endpoint=False)
        x = a * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** (2 / n)
        y = b * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** (2 / n) * (1 - taper * x / a)
        poly = _rotate(np.stack([x, y], 1), ang)
        poly -= poly.min(0) - 4
        w, h = int(poly[:, 0].max()) + 5, int(poly[:, 1].max()) + 5
        if w < W - 4 and h < H - 4:
            break
        area *= 0.85
    mask = _fill(h, w, [poly])
    kind = int(rng.integers(3))
    base = np.array([[200, 228, 240], [40, 40, 195], [40, 150, 235]][kind], np.float32)
    reflectors = [
        (_interior_point(rng, mask, 0.5), rng.uniform(0.25, 0.45) * b) for _ in range(int(rng.integers(1, 4)))
    ]

    def draw(crop, rng):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
        glow = np.clip(dist / (dist.max() + 1e-6), 0, 1)[..., None]
        body = base * (0.75 + 0.3 * glow)
        for (cx, cy), r in reflectors:
            d = np.hypot(xx - cx, yy - cy)
            ring = np.exp(-((d - 0.6 * r) / 2.0) ** 2) + np.exp(-(d / (0.35 * r + 1)) ** 2)
            body = body + 55.0 * ring[..., None]
        crop[mask] = np.clip(body, 0, 255)[mask]
        _blend(crop, (205, 205, 210), 0.9 * _lines(h, w, [poly], 2, closed=True))
        if not broken:
            return
        px, py = _interior_point(rng, mask, 0.3)
        holes = []
        for _ in range(int(rng.integers(2, 6))):
            cx = px + rng.uniform(-0.5, 0.5) * a
            cy = py + rng.uniform(-0.4, 0.4) * b
            r = rng.uniform(0.12, 0.3) * b + 2
            k = int(rng.integers(7, 12))
            th = np.sort(rng.uniform(0, 2 * math.pi, k))
            rad = r * rng.uniform(0.4, 1.0, k)
            holes.append(np.stack([cx + rad * np.cos(th), cy + rad * np.sin(th)], 1))
        hole = _fill(h, w, holes) & mask
        crop[hole] = crop[hole] * 0.1 + np.array([22, 22, 26], np.float32) * 0.9
        rays = [_jagged_ray(rng, (px, py), aa, rng.uniform(0.5, 1.2) * a, step=5.0, jitter=0.3)
                for aa in rng.uniform(0, 2 * math.pi, int(rng.integers(6, 11)))]
        mf = mask.astype(np.float32)
        _blend(crop, (30, 30, 35), 0.85 * _lines(h, w, rays[::2], 1) * mf)
        _blend(crop, (250, 250, 250), 0.85 * _lines(h, w, rays[1::2], 1) * mf)
        shards = []
        for _ in range(int(rng.integers(8, 21))):
            cx, cy = px + rng.normal(0, 0.35 * a), py + rng.normal(0, 0.35 * b)
            sz = rng.uniform(2.5, 7)
            th = rng.uniform(0, 2 * math.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.4, 0.4, 3)
            shards.append(np.stack([cx + sz * np.cos(th), cy + sz * np.sin(th)], 1))
        shard = _fill(h, w, shards) & mask
        crop[shard] = np.array([245, 248, 250], np.float32)

    return _Plan(mask, mask, draw)


def _plan_wheel(rng, area, W, H, broken=True) -> _Plan:
    flat = rng.uniform(0.72, 0.84) if broken else 0.97
    bulge = rng.uniform(0.12, 0.22) if broken else 0.0
    for _ in range(10):
        R = math.sqrt(area / (math.pi * (0.95 if broken else 0.99)))
        arch_r = 1.15 * R
        cx = arch_r * (1 + 0.03) + 2
        cy = arch_r + 2
        w = int(2 * cx) + 1
        h = int(cy + flat * R + 0.12 * R + 4) + 1
        if w < W - 4 and h < H - 4:
            break
        area *= 0.85
    t = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    x = R * np.cos(t) * (1 + bulge * np.clip(np.sin(t), 0, None) ** 4)
    y = np.minimum(R * np.sin(t), flat * R)
    outline = np.stack([x + cx, y + cy], 1)
    mask = _fill(h, w, [outline])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot(xx - cx, yy - cy)
    arch = (d <= arch_r) & (yy <= cy + 0.25 * R)
    shadow = ((xx - cx) / (1.25 * R)) ** 2 + ((yy - cy - flat * R) / (0.08 * R + 2)) ** 2 <= 1
    footprint = mask | arch | shadow
    rim_r = rng.uniform(0.52, 0.64) * R
    rim_col = np.array([rng.uniform(160, 200)] * 3, np.float32)
    spokes = int(rng.integers(4, 7))
    phase = rng.uniform(0, 2 * math.pi)
    rcy = cy - 0.02 * R

    def draw(crop, rng):
        _blend(crop, (26, 26, 30), (arch & ~mask).astype(np.float32))
        _blend(crop, (15, 15, 18), 0.8 * (shadow & ~mask).astype(np.float32))
        tire = 38.0 + 18.0 * np.exp(-((d - 0.8 * R) / (0.06 * R + 1)) ** 2)
        crop[mask] = np.stack([tire, tire, tire + 3], -1)[mask]
        dr = np.hypot(xx - cx, yy - rcy)
        rim = dr <= rim_r
        ang = np.arctan2(yy - rcy, xx - cx) - phase
        gap = (np.cos(spokes * ang) > 0.45) & (dr > 0.28 * rim_r) & (dr < 0.88 * rim_r)
        metal = rim_col * (1.05 - 0.25 * (yy - rcy + rim_r)[..., None] / (2 * rim_r))
        crop[rim] = metal[rim]
        crop[rim & gap] = np.array([55, 55, 60], np.float32)
        crop[dr <= 0.15 * rim_r] = np.array([120, 120, 125], np.float32)

    return _Plan(mask, footprint, draw)


_PLANNERS = {
    "dent": _plan_dent,
    "scratch": _plan_scratch,
    "crack": _plan_crack,
    "glass shatter": _plan_window,
    "lamp broken": _plan_lamp,
    "tire flat": _plan_wheel,
}
_CONTEXT = (_plan_window, _plan_lamp, _plan_wheel)  # drawn intact, never annotated


# ----------------------------------------------------------------------------------------------- scenes
def _panel(rng: np.random.Generator, W: int, H: int) -> np.ndarray:
    """A painted body panel: colour, gradient, a soft reflection, grain and one or two panel lines (float32 BGR)."""
    base = _PAINTS[int(rng.integers(len(_PAINTS)))] + rng.normal(0, 8, 3).astype(np.float32)
    # Smooth shading fields on a coarse grid, upsampled (they have no fine detail).
    h4, w4 = max(2, H // 4), max(2, W // 4)
    yy, xx = np.mgrid[0:h4, 0:w4].astype(np.float32)
    yy *= H / h4
    xx *= W / w4
    gd = rng.uniform(0, 2 * math.pi)
    g = (math.cos(gd) * xx / W + math.sin(gd) * yy / H).astype(np.float32)
    shade = 0.85 + 0.3 * (g - g.min()) / (g.max() - g.min() + 1e-6)
    rd = rng.uniform(0, math.pi)
    off = rng.uniform(0.2, 0.8) * (W + H) / 2
    dist = math.cos(rd) * xx + math.sin(rd) * yy - off
    glow = rng.uniform(25, 60) * np.exp(-((dist / (rng.uniform(0.05, 0.15) * W)) ** 2))
    shade = cv2.resize(shade, (W, H), interpolation=cv2.INTER_LINEAR)
    glow = cv2.resize(glow.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    glow += rng.standard_normal((H, W), dtype=np.float32) * 2.5
    img = base * shade[..., None]
    img += glow[..., None]
    for _ in range(int(rng.integers(0, 3))):
        if rng.random() < 0.5:
            p0 = np.array([rng.uniform(0, W), -5.0])
            p2 = np.array([rng.uniform(0, W), H + 5.0])
        else:
            p0 = np.array([-5.0, rng.uniform(0, H)])
            p2 = np.array([W + 5.0, rng.uniform(0, H)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.1 * W, 2)
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        _blend(img, base * 0.45, 0.8 * _lines(H, W, [curve], 2))
        _blend(img, np.minimum(base * 1.3 + 20, 255), 0.5 * _lines(H, W, [curve + [2.0, 2.0]], 1))
    return img


def _place(rng, plan: _Plan, occupied: np.ndarray, tries: int = 40) -> Optional[Tuple[int, int]]:
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


def _plan_in_bucket(rng, cls: str, bucket: str, W: int, H: int) -> _Plan:
    """Plan an instance whose mask area falls in ``bucket`` where the image size allows it."""
    area = _target_area(rng, bucket, W, H)
    plan = None
    for _ in range(5):
        plan = _PLANNERS[cls](rng, area, W, H)
        got = float(plan.mask.sum())
        if size_bucket(got) == bucket or got <= 0:
            break
        area *= _target_area(rng, bucket, W, H) / got
    return plan


def _render(rng, W: int, H: int, instances: Sequence[Tuple[str, str]], num_context: int):
    """Draw one image with ``num_context`` intact window/lamp/wheel objects where they fit.

    Returns (uint8 BGR image, [(category name, full-size bool mask), ...]).
    """
    img = _panel(rng, W, H)
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
            plan = _PLANNERS[cls](rng, 0.75 * float(plan.mask.sum()), W, H)
            pos = _place(rng, plan, occupied)
        if pos is None:
            continue
        out.append(_apply(rng, img, occupied, plan, pos, cls))
    for _ in range(num_context):
        _add_context(rng, img, occupied)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), [o for o in out if o[1].any()]


def _apply(rng, img, occupied, plan: _Plan, pos, cls):
    H, W = occupied.shape
    x0, y0 = pos
    h, w = plan.mask.shape
    crop = img[y0 : y0 + h, x0 : x0 + w].copy()
    plan.draw(crop, rng)
    fp = plan.footprint
    img[y0 : y0 + h, x0 : x0 + w][fp] = crop[fp]
    margin = cv2.dilate(fp.astype(np.uint8), _disk(6)).astype(bool)
    occupied[y0 : y0 + h, x0 : x0 + w] |= margin
    full = np.zeros((H, W), bool)
    full[y0 : y0 + h, x0 : x0 + w] = plan.mask
    return cls, full


def _add_context(rng, img, occupied):
    H, W = occupied.shape
    planner = _CONTEXT[int(rng.integers(len(_CONTEXT)))]
    area = _target_area(rng, "small" if rng.random() < 0.5 else "medium", W, H)
    plan = planner(rng, area, W, H, broken=False)
    pos = _place(rng, plan, occupied, tries=20)
    if pos is not None:
        _apply(rng, img, occupied, plan, pos, "context")


def _split_specs(rng, n_images: int) -> List[List[Tuple[str, str]]]:
    """(class, bucket) per instance per image: classes balanced, 1-3 instances, at most one large per image."""
    names = [c["name"] for c in CARDD_CATEGORIES]
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


# ----------------------------------------------------------------------------------------------- writers
def _encode_jpg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buf.tobytes()


def _encode_png(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask)
    assert ok
    return buf.tobytes()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _coco_categories():
    return [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]} for c in CARDD_CATEGORIES]


def make_synthetic_cardd(
    root: str,
    num_images: Tuple[int, int, int] = (24, 8, 8),
    image_size: Tuple[int, int] = (512, 384),
    seed: int = 0,
    num_undamaged: int = 0,
    write_sod: bool = True,
) -> Dict:
    """Write a synthetic CarDD (COCO + SOD layouts) under ``root``; see the module docstring for the layout.

    Args:
        root: output folder (created); it plays the role of the folder that holds ``CarDD_COCO``.
        num_images: (train, val, test) image counts; image ids / file numbers run 1..sum over the three splits.
        image_size: (width, height) of every image.
        seed: everything drawn is a function of (seed, split, image index).
        num_undamaged: damage-free images written to ``root/undamaged`` (no annotations, not in the SOD set).
        write_sod: also write ``CarDD_SOD``.

    Returns:
        dict with ``root``, ``coco_root``, ``sod_root`` (None without SOD), ``json`` / ``image_dirs`` (per split),
        ``undamaged_dir`` (None when ``num_undamaged`` is 0) and ``num_annotations`` (per split).
    """
    W, H = int(image_size[0]), int(image_size[1])
    if W < 32 or H < 32:
        raise ValueError(f"image_size {image_size} is too small (need at least 32x32)")
    if len(num_images) != 3 or min(num_images) < 0:
        raise ValueError(f"num_images must be three counts (train, val, test), got {num_images}")
    root = os.path.abspath(root)
    coco_root = os.path.join(root, "CarDD_COCO")
    sod_root = os.path.join(root, "CarDD_SOD") if write_sod else None
    os.makedirs(os.path.join(coco_root, "annotations"), exist_ok=True)
    info = {
        "root": root,
        "coco_root": coco_root,
        "sod_root": sod_root,
        "json": {},
        "image_dirs": {},
        "undamaged_dir": None,
        "num_annotations": {},
    }
    next_id, ann_id = 1, 1
    for si, split in enumerate(SPLITS):
        img_dir = os.path.join(coco_root, f"{split}2017")
        os.makedirs(img_dir, exist_ok=True)
        if sod_root:
            sd = SOD_SPLITS[split]
            sod_img = os.path.join(sod_root, sd, f"{sd}-Image")
            sod_mask = os.path.join(sod_root, sd, f"{sd}-Mask")
            os.makedirs(sod_img, exist_ok=True)
            os.makedirs(sod_mask, exist_ok=True)
        specs = _split_specs(np.random.default_rng([seed, si, 0]), int(num_images[si]))
        images, anns, names = [], [], []
        for k, inst in enumerate(specs):
            rng = np.random.default_rng([seed, si, 1, k])
            img, objs = _render(rng, W, H, inst, num_context=int(rng.random() < 0.3))
            name = f"{next_id:06d}.jpg"
            jpg = _encode_jpg(img)
            _write(os.path.join(img_dir, name), jpg)
            images.append({"id": next_id, "file_name": name, "width": W, "height": H})
            union = np.zeros((H, W), np.uint8)
            for cls, m in objs:
                polys = mask_to_polygons(m)
                if not polys:
                    continue
                area, bbox = polygons_area_bbox(polys, H, W)
                if area <= 0 or bbox[2] <= 0 or bbox[3] <= 0:
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, H, W))
                union |= mask_utils.decode(rle).astype(np.uint8)
                anns.append({
                    "id": ann_id,
                    "image_id": next_id,
                    "category_id": next(c["id"] for c in CARDD_CATEGORIES if c["name"] == cls),
                    "segmentation": polys,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                    "attributes": {"occluded": False},
                })
                ann_id += 1
            if sod_root:
                _write(os.path.join(sod_img, name), jpg)
                _write(os.path.join(sod_mask, name[:-4] + ".png"), _encode_png(union * 255))
            names.append(name)
            next_id += 1
        coco = {
            "info": {"description": "synthetic CarDD-style data (cardd_d2.data.synthetic)", "version": "1.0",
                     "seed": seed},
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": _coco_categories(),
        }
        json_path = os.path.join(coco_root, "annotations", f"instances_{split}2017.json")
        with open(json_path, "w") as f:
            json.dump(coco, f)
        info["json"][split] = json_path
        info["image_dirs"][split] = img_dir
        info["num_annotations"][split] = len(anns)
        if sod_root:
            sd = SOD_SPLITS[split]
            if split == "train":
                lines = [f"{sd}-Image/{n} {sd}-Mask/{n[:-4]}.png\n" for n in names]
                lst = os.path.join(sod_root, sd, "train_pair.lst")
            else:
                lines = [f"{n}\n" for n in names]
                lst = os.path.join(sod_root, sd, "test.lst")
            with open(lst, "w") as f:
                f.writelines(lines)
    if num_undamaged > 0:
        und = os.path.join(root, "undamaged")
        os.makedirs(und, exist_ok=True)
        for k in range(int(num_undamaged)):
            rng = np.random.default_rng([seed, 3, 1, k])
            img, _ = _render(rng, W, H, [], num_context=int(rng.integers(0, 3)))
            _write(os.path.join(und, f"{next_id:06d}.jpg"), _encode_jpg(img))
            next_id += 1
        info["undamaged_dir"] = und
    return info
