"""Painters of the synthetic data: a car body panel and one planner per damage kind.

A planner ``(rng, area, W, H, broken=True) -> Plan`` sizes an object for a target mask area and returns its damage
mask, its footprint and a ``draw`` that paints it into an image crop. Appearance (chosen so that Mask R-CNN can tell
the classes apart from random initialisation):

* dent: a shaded elliptical hollow, dark on one side, lit on the other, with a specular highlight.
* scratch: a band of thin, long, nearly parallel light strokes over a lightly scuffed area.
* crack: dark jagged branching lines in a strip of chipped (primer-grey) paint.
* glass shatter: a dark-blue window with a radial / concentric web of white cracks and frosted cells
  (the whole window is the instance).
* lamp broken: a bright lamp (head, tail or indicator colours) with dark holes, cracks and shards.
* tire flat: a dark tyre with a silver rim whose bottom bulges sideways and is flattened on the ground.

Windows, lamps and wheels drawn with ``broken=False`` are the unannotated context objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple

import cv2
import numpy as np

from ..categories import CARDD_AREA_SMALL

__all__ = ["Plan", "PLANNERS", "CONTEXT_PLANNERS", "paint_panel", "disk"]

# Car paints (BGR), mid to dark so that light scratches and bright lamps stand out.
_PAINTS = np.array(
    [
        [150, 150, 152], [110, 112, 115], [60, 60, 64], [40, 40, 150], [140, 80, 30], [60, 100, 50],
        [30, 110, 180], [120, 60, 90], [95, 130, 140], [170, 160, 140], [50, 30, 110], [150, 120, 80],
    ],
    dtype=np.float32,
)


# ----------------------------------------------------------------------------------------------- drawing helpers
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


def disk(r: int) -> np.ndarray:
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
class Plan:
    """One object drawn into an (h, w) crop: ``mask`` is the damage (annotated) region, ``footprint`` everything it
    paints, ``draw(crop, rng)`` paints the float32 BGR crop in place."""

    mask: np.ndarray
    footprint: np.ndarray
    draw: Callable[[np.ndarray, np.random.Generator], None]


def _plan_dent(rng, area, W, H, broken=True) -> Plan:
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

    return Plan(mask, mask, draw)


def _plan_scratch(rng, area, W, H, broken=True) -> Plan:
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

    return Plan(mask, mask, draw)


def _plan_crack(rng, area, W, H, broken=True) -> Plan:
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
    zmask = cv2.dilate((layer > 0).astype(np.uint8), disk(zone / 2))
    zmask = cv2.GaussianBlur(zmask.astype(np.float32), (0, 0), 1.5) > 0.5
    primer = np.array([rng.uniform(150, 185)] * 3, np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
    dark = rng.uniform(15, 40)

    def draw(crop, rng):
        soft = cv2.GaussianBlur(zmask.astype(np.float32), (0, 0), 1.0)
        tex = 0.35 + 0.2 * rng.random(soft.shape).astype(np.float32)
        _blend(crop, primer, soft * tex)
        _blend(crop, (dark, dark, dark + 5), 0.9 * layer)
        _blend(crop, (dark, dark, dark), 0.5 * fine)

    return Plan(zmask, zmask, draw)


def _plan_window(rng, area, W, H, broken=True) -> Plan:
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
    footprint = cv2.dilate(mask.astype(np.uint8), disk(f)).astype(bool)
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

    return Plan(mask, footprint, draw)


def _plan_lamp(rng, area, W, H, broken=True) -> Plan:
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

    return Plan(mask, mask, draw)


def _plan_wheel(rng, area, W, H, broken=True) -> Plan:
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

    return Plan(mask, footprint, draw)


PLANNERS = {
    "dent": _plan_dent,
    "scratch": _plan_scratch,
    "crack": _plan_crack,
    "glass shatter": _plan_window,
    "lamp broken": _plan_lamp,
    "tire flat": _plan_wheel,
}
CONTEXT_PLANNERS = (_plan_window, _plan_lamp, _plan_wheel)  # drawn intact, never annotated


def paint_panel(rng: np.random.Generator, W: int, H: int) -> np.ndarray:
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


