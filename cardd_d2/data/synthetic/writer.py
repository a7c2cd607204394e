"""Writes the synthetic data: COCO json + JPEGs once, the CarDD_SOD layout derived with cardd_sod's converter.

Output is a pure function of the arguments: the same call writes byte-identical files. Everything drawn is a
function of (seed, split, image index), not of the ids, so ``first_id`` and the class names change only the json.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from cardd_sod.data.coco import coco_root_to_sod
from cardd_sod.data.layout import COCO_DIR, SOD_DIR, SPLITS, coco_image_dir, coco_json

from ..categories import CARDD_CATEGORIES
from .scene import PAINTER_NAMES, render, split_specs

__all__ = ["make_synthetic_cardd", "make_synthetic_coco", "mask_to_polygons", "polygons_area_bbox"]

JPEG_QUALITY = 95


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


def _encode_jpg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buf.tobytes()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _check_args(num_images, image_size) -> Tuple[int, int]:
    W, H = int(image_size[0]), int(image_size[1])
    if W < 32 or H < 32:
        raise ValueError(f"image_size {image_size} is too small (need at least 32x32)")
    if len(num_images) != 3 or min(num_images) < 0:
        raise ValueError(f"num_images must be three counts (train, val, test), got {num_images}")
    return W, H


def _write_split(json_path: str, img_dir: str, split_index: int, num_images: int, seed: int, W: int, H: int,
                 categories: List[dict], painter_ids: Dict[str, int], next_id: int, ann_id: int,
                 description: str) -> Tuple[int, int, int]:
    """Render one split: JPEGs into ``img_dir`` (named by image id) and the COCO json.

    ``painter_ids`` maps each painter (damage kind) drawn to its category id. Returns (next image id, next
    annotation id, number of annotations).
    """
    os.makedirs(img_dir, exist_ok=True)
    specs = split_specs(np.random.default_rng([seed, split_index, 0]), int(num_images), list(painter_ids))
    images, anns = [], []
    for k, inst in enumerate(specs):
        rng = np.random.default_rng([seed, split_index, 1, k])
        img, objs = render(rng, W, H, inst, num_context=int(rng.random() < 0.3))
        name = f"{next_id:06d}.jpg"
        _write(os.path.join(img_dir, name), _encode_jpg(img))
        images.append({"id": next_id, "file_name": name, "width": W, "height": H})
        for painter, m in objs:
            polys = mask_to_polygons(m)
            if not polys:
                continue
            area, bbox = polygons_area_bbox(polys, H, W)
            if area <= 0 or bbox[2] <= 0 or bbox[3] <= 0:
                continue
            anns.append({
                "id": ann_id,
                "image_id": next_id,
                "category_id": painter_ids[painter],
                "segmentation": polys,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
                "attributes": {"occluded": False},
            })
            ann_id += 1
        next_id += 1
    coco = {
        "info": {"description": description, "version": "1.0", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(coco, f)
    return next_id, ann_id, len(anns)


def make_synthetic_cardd(
    root: str,
    num_images: Tuple[int, int, int] = (24, 8, 8),
    image_size: Tuple[int, int] = (512, 384),
    seed: int = 0,
    num_undamaged: int = 0,
    write_sod: bool = True,
) -> Dict:
    """Write a synthetic CarDD under ``root`` in the release's layouts (:mod:`cardd_sod.data.layout`).

    ``root/CarDD_COCO``: JPEGs named ``000001.jpg`` ... numbered 1..N across train, val, test (= image ids), and
    one instances json per split: categories 1..6 in CarDD order, polygon ``segmentation`` (each polygon >= 3
    points, non-zero area), ``area`` of the polygon mask as pycocotools rasterises it, ``bbox`` tight around the
    points, ``iscrowd`` 0, ``attributes`` ``{"occluded": false}``. ``root/CarDD_SOD`` (``write_sod``): derived from
    CarDD_COCO by :func:`cardd_sod.data.coco.coco_root_to_sod` (the same JPEG bytes, masks = union of the instance
    masks, no edge maps). ``root/undamaged/0000NN.jpg``: ``num_undamaged`` damage-free images (numbers continue
    after test; intact windows, lamps and wheels, no annotations).

    Args:
        root: output folder (created); it plays the role of the folder that holds ``CarDD_COCO``.
        num_images: (train, val, test) image counts.
        image_size: (width, height) of every image.
        seed: everything drawn is a function of (seed, split, image index).

    Returns:
        dict with ``root``, ``coco_root``, ``sod_root`` (None without SOD), ``json`` / ``image_dirs`` (per split),
        ``undamaged_dir`` (None when ``num_undamaged`` is 0) and ``num_annotations`` (per split).
    """
    W, H = _check_args(num_images, image_size)
    root = os.path.abspath(root)
    coco_root = os.path.join(root, COCO_DIR)
    info = {"root": root, "coco_root": coco_root, "sod_root": None, "json": {}, "image_dirs": {},
            "undamaged_dir": None, "num_annotations": {}}
    categories = [{k: c[k] for k in ("id", "name", "supercategory")} for c in CARDD_CATEGORIES]
    painter_ids = {c["name"]: c["id"] for c in CARDD_CATEGORIES}
    next_id, ann_id = 1, 1
    for si, split in enumerate(SPLITS):
        json_path, img_dir = coco_json(coco_root, split), coco_image_dir(coco_root, split)
        next_id, ann_id, n = _write_split(json_path, img_dir, si, num_images[si], seed, W, H, categories,
                                          painter_ids, next_id, ann_id,
                                          "synthetic CarDD-style data (cardd_d2.data.synthetic)")
        info["json"][split], info["image_dirs"][split], info["num_annotations"][split] = json_path, img_dir, n
    if write_sod:
        info["sod_root"] = os.path.join(root, SOD_DIR)
        coco_root_to_sod(coco_root, info["sod_root"], write_edges=False)
    if num_undamaged > 0:
        und = os.path.join(root, "undamaged")
        os.makedirs(und, exist_ok=True)
        for k in range(int(num_undamaged)):
            rng = np.random.default_rng([seed, 3, 1, k])
            img, _ = render(rng, W, H, [], num_context=int(rng.integers(0, 3)))
            _write(os.path.join(und, f"{next_id:06d}.jpg"), _encode_jpg(img))
            next_id += 1
        info["undamaged_dir"] = und
    return info


def make_synthetic_coco(
    root: str,
    class_names: Sequence[str],
    num_images: Tuple[int, int, int] = (24, 8, 8),
    image_size: Tuple[int, int] = (512, 384),
    seed: int = 0,
    first_id: int = 0,
) -> Dict:
    """A synthetic damage set in a plain COCO layout with your own class names, like an annotation tool's export::

        root/annotations/{train,val,test}.json
        root/images/{train,val,test}/000000.jpg ...

    Class ``k`` is drawn with the k-th CarDD painter (dent, scratch, crack, glass shatter, lamp broken, tire flat),
    so at most six classes. Image, annotation and category ids all start at ``first_id`` (many tools count from 0).

    Returns:
        dict with ``root``, ``json`` / ``image_dirs`` (per split), ``num_annotations`` (per split) and
        ``class_names``.
    """
    W, H = _check_args(num_images, image_size)
    names = [str(n) for n in class_names]
    if not 1 <= len(names) <= len(PAINTER_NAMES) or len(set(names)) != len(names):
        raise ValueError(f"class_names must be 1..{len(PAINTER_NAMES)} distinct names, got {names}")
    root = os.path.abspath(root)
    categories = [{"id": first_id + k, "name": n, "supercategory": "damage"} for k, n in enumerate(names)]
    painter_ids = {p: first_id + k for k, p in enumerate(PAINTER_NAMES[: len(names)])}
    info = {"root": root, "json": {}, "image_dirs": {}, "num_annotations": {}, "class_names": names}
    next_id = ann_id = int(first_id)
    for si, split in enumerate(SPLITS):
        json_path = os.path.join(root, "annotations", f"{split}.json")
        img_dir = os.path.join(root, "images", split)
        next_id, ann_id, n = _write_split(json_path, img_dir, si, num_images[si], seed, W, H, categories,
                                          painter_ids, next_id, ann_id,
                                          "synthetic damage data (cardd_d2.data.synthetic)")
        info["json"][split], info["image_dirs"][split], info["num_annotations"][split] = json_path, img_dir, n
    return info
