"""Serialise detectron2 ``Instances`` into plain, JSON-ready dicts (shared by the demo, assessment and the service).

One dict per instance::

    {"class": "dent", "class_id": 0, "score": 0.93, "bbox": [x0, y0, x1, y1],
     "mask": {"size": [h, w], "counts": "<COCO RLE string>"},   # only when the model predicts masks
     "polygon": [[x, y, x, y, ...], ...],                        # only with with_polygon=True
     "area_px": 1234, "area_pct": 0.8, "size_bucket": "small"}

``class_id`` is the model's contiguous class index (0-based, the order of ``thing_classes``). ``area_px`` is the mask
area when a mask is present (as pycocotools measures ground-truth size) and the box area otherwise; ``area_pct`` is
that area as a percentage of the image. ``size_bucket`` uses CarDD's thresholds (``cardd_d2.data.size_bucket``).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from cardd_d2.data.categories import CARDD_CLASS_NAMES, size_bucket

__all__ = [
    "DEFAULT_REPAIR_PRIORITY",
    "instances_to_dicts",
    "mask_to_polygons",
    "mask_to_rle",
    "rle_to_mask",
    "sort_by_priority",
]

# Order used to rank instances in an assessment. CarDD's annotation guidelines resolve overlapping damages with the
# precedence crack > dent > scratch; the three part-level classes (glass shatter, lamp broken, tire flat) follow in
# category-id order. Classes missing from the list go last; ties are broken by descending score.
DEFAULT_REPAIR_PRIORITY = ("crack", "dent", "scratch", "glass shatter", "lamp broken", "tire flat")


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a binary HxW mask, with ``counts`` as a str (JSON-ready)."""
    from pycocotools import mask as mask_util

    arr = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    if arr.ndim != 2:
        raise ValueError(f"mask_to_rle expects an HxW mask, got shape {arr.shape}")
    rle = mask_util.encode(arr)
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`: a boolean HxW array."""
    from pycocotools import mask as mask_util

    counts = rle["counts"]
    enc = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_util.decode(enc).astype(bool)


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list:
    """Outer contours of a binary mask as COCO-style flat polygons ``[[x0, y0, x1, y1, ...], ...]``."""
    import cv2

    arr = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    contours, _ = cv2.findContours(arr, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) < min_points:
            continue
        # Pixel centres (+0.5) so that re-rasterising the polygon covers the original pixels.
        polys.append([round(float(v) + 0.5, 2) for v in c.reshape(-1)])
    return polys


def _class_name(class_names: Sequence[str] | None, idx: int) -> str:
    if class_names is not None and 0 <= idx < len(class_names):
        return str(class_names[idx])
    return f"class_{idx}"


def instances_to_dicts(
    instances,
    class_names: Sequence[str] | None = None,
    image_size: tuple | None = None,
    *,
    with_mask: bool = True,
    with_polygon: bool = False,
    score_threshold: float = 0.0,
) -> list:
    """Convert detectron2 ``Instances`` (as returned by a predictor) into a list of dicts (see module docstring).

    ``class_names`` defaults to CarDD's six names. ``image_size`` (h, w) defaults to ``instances.image_size``.
    Instances with a score below ``score_threshold`` are left out. The list keeps the input order.
    """
    if class_names is None:
        class_names = CARDD_CLASS_NAMES
    if image_size is None:
        image_size = tuple(instances.image_size)
    h, w = int(image_size[0]), int(image_size[1])
    n = len(instances)
    if n == 0:
        return []
    inst = instances.to("cpu") if hasattr(instances, "to") else instances

    scores = inst.scores.numpy().astype(float) if inst.has("scores") else np.ones(n)
    classes = inst.pred_classes.numpy().astype(int) if inst.has("pred_classes") else np.zeros(n, dtype=int)
    boxes = inst.pred_boxes.tensor.numpy().astype(float) if inst.has("pred_boxes") else None
    masks = None
    if inst.has("pred_masks"):
        masks = inst.pred_masks
        masks = masks.numpy() if hasattr(masks, "numpy") else np.asarray(masks)
        if masks.dtype != bool:
            masks = masks >= 0.5
    if boxes is None and masks is None:
        raise ValueError("Instances have neither pred_boxes nor pred_masks")

    out = []
    for i in range(n):
        score = float(scores[i])
        if score < score_threshold:
            continue
        m = masks[i] if masks is not None else None
        if boxes is not None:
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
        else:
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = ((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                              if len(xs) else (0.0, 0.0, 0.0, 0.0))
        area = float(m.sum()) if m is not None else max(0.0, x1 - x0) * max(0.0, y1 - y0)
        cid = int(classes[i])
        d = {
            "class": _class_name(class_names, cid),
            "class_id": cid,
            "score": round(score, 6),
            "bbox": [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)],
        }
        if m is not None and with_mask:
            d["mask"] = mask_to_rle(m)
        if m is not None and with_polygon:
            d["polygon"] = mask_to_polygons(m)
        d["area_px"] = int(round(area))
        d["area_pct"] = round(100.0 * area / float(max(1, h * w)), 4)
        d["size_bucket"] = size_bucket(area)
        out.append(d)
    return out


def sort_by_priority(instance_dicts: Iterable[dict], priority: Sequence[str] = DEFAULT_REPAIR_PRIORITY) -> list:
    """Order instance dicts by class priority (``priority`` list, earlier = more urgent), then by score (desc).

    Adds ``priority_rank`` (0-based position in the returned list) to each dict.
    """
    rank = {name: i for i, name in enumerate(priority)}
    items = sorted(instance_dicts, key=lambda d: (rank.get(d["class"], len(rank)), -float(d.get("score", 0.0))))
    for i, d in enumerate(items):
        d["priority_rank"] = i
    return items
