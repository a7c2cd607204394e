"""Instance segmentation vs SOD (paper Fig. 10): instance predictions -> saliency maps, scores, comparison grid.

Input is the file detectron2's ``COCOEvaluator`` writes (``coco_instances_results.json``: a list of
``{image_id, category_id, score, segmentation (RLE, counts as str or bytes; polygons are accepted too)}``) plus the
GT COCO json (file names and sizes).  Each image's saliency map is the union of its instance masks whose score is
``> score_thresh`` (0.5, as in the paper), written as a 0/255 grey PNG named ``<file stem>.png`` by the writer of the
SOD predictions (:func:`cardd_sod.map_saving.write_map`; a binary map needs no resizing or rounding rule); images
without such instances get an all-zero map.  No detectron2 import.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from .data.coco import _load_coco, instance_union_mask
from .map_saving import write_map
from .metrics import evaluate_saliency, format_markdown_table

__all__ = ["instances_to_saliency", "gt_masks_from_coco", "draw_comparison_grid", "compare_methods"]


def _decode(seg, h: int, w: int, where: str) -> np.ndarray:
    from pycocotools import mask as mask_utils
    if isinstance(seg, list):  # polygons
        rles = mask_utils.frPyObjects(seg, h, w)
        return mask_utils.decode(mask_utils.merge(rles))
    if isinstance(seg, dict) and "counts" in seg:
        rle = dict(seg)
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, h, w)
        elif isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        m = mask_utils.decode(rle)
        if m.shape[:2] != (h, w):
            raise ValueError(f"{where}: RLE size {m.shape[:2]} != image size {(h, w)}")
        return m
    raise ValueError(f"{where}: unsupported segmentation {type(seg).__name__}")


def instances_to_saliency(results_json: str, gt_json: str, out_dir: str, score_thresh: float = 0.5) -> list[str]:
    """Write one saliency PNG per GT image; returns the stems written."""
    if not os.path.isfile(results_json):
        raise FileNotFoundError(f"instance predictions not found: {results_json}")
    with open(results_json) as f:
        try:
            preds = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{results_json}: not valid JSON ({e})") from e
    if not isinstance(preds, list):
        raise ValueError(f"{results_json}: expected a list of instance predictions (coco_instances_results.json)")
    coco = _load_coco(gt_json)
    by_image = defaultdict(list)
    for i, p in enumerate(preds):
        for k in ("image_id", "score", "segmentation"):
            if k not in p:
                raise ValueError(f"{results_json}: prediction #{i} has no {k!r} (need instance segmentation results)")
        if p["image_id"] not in coco.imgs:
            raise ValueError(f"{results_json}: prediction #{i} names image_id {p['image_id']} absent from {gt_json}")
        by_image[p["image_id"]].append(p)
    os.makedirs(out_dir, exist_ok=True)
    names = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        h, w = int(info["height"]), int(info["width"])
        sal = np.zeros((h, w), np.uint8)
        for p in by_image.get(img_id, ()):
            if float(p["score"]) > score_thresh:
                sal[_decode(p["segmentation"], h, w, f"{results_json} image {img_id}") > 0] = 255
        stem = os.path.splitext(os.path.basename(info["file_name"]))[0]
        write_map(os.path.join(out_dir, stem + ".png"), sal)
        names.append(stem)
    return names


def gt_masks_from_coco(gt_json: str, out_dir: str) -> list[str]:
    """Union GT masks (0/255 PNG per image) from a COCO json, for scoring against instance-derived maps."""
    coco = _load_coco(gt_json)
    os.makedirs(out_dir, exist_ok=True)
    names = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        stem = os.path.splitext(os.path.basename(info["file_name"]))[0]
        write_map(os.path.join(out_dir, stem + ".png"), instance_union_mask(coco, info))
        names.append(stem)
    return names


def _cell(img: np.ndarray, cell_h: int) -> np.ndarray:
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * cell_h / h)), cell_h), interpolation=cv2.INTER_AREA)


def draw_comparison_grid(image_dir: str, gt_dir: str, methods: Mapping[str, str], out_path: str,
                         names: Optional[Sequence[str]] = None, max_rows: int = 8, cell_h: int = 160,
                         pad: int = 4, header_h: int = 28) -> str:
    """Grid image: one row per image, columns input | GT | each method's map (in ``methods`` order)."""
    if names is None:
        names = sorted(os.path.splitext(f)[0] for f in os.listdir(gt_dir) if f.lower().endswith(".png"))
    names = list(names)[:max_rows]
    if not names:
        raise ValueError(f"no images to draw (GT folder {gt_dir})")
    images = {os.path.splitext(f)[0]: os.path.join(image_dir, f) for f in os.listdir(image_dir)}
    titles = ["Input", "GT"] + list(methods)
    rows = []
    for n in names:
        if n not in images:
            raise FileNotFoundError(f"input image for {n!r} not found in {image_dir}")
        img = cv2.imread(images[n], cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"unreadable image: {images[n]}")
        cells = [img]
        for d in [gt_dir] + list(methods.values()):
            p = os.path.join(d, n + ".png")
            m = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise FileNotFoundError(f"map for {n!r} missing or unreadable: {p}")
            if m.shape != img.shape[:2]:
                m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            cells.append(m)
        rows.append([_cell(c, cell_h) for c in cells])
    col_w = [max(r[i].shape[1] for r in rows) for i in range(len(titles))]
    width = sum(col_w) + pad * (len(titles) + 1)
    height = header_h + len(rows) * (cell_h + pad) + pad
    canvas = np.full((height, width, 3), 255, np.uint8)
    x = pad
    for i, t in enumerate(titles):
        cv2.putText(canvas, t, (x + 2, header_h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        y = header_h
        for r in rows:
            c = r[i]
            canvas[y:y + c.shape[0], x:x + c.shape[1]] = c
            y += cell_h + pad
        x += col_w[i] + pad
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    if not cv2.imwrite(out_path, canvas):
        raise OSError(f"cannot write {out_path}")
    return out_path


def compare_methods(gt_json: str, image_dir: str, out_dir: str, instance_results: Mapping[str, str] = (),
                    saliency_dirs: Mapping[str, str] = (), gt_mask_dir: Optional[str] = None,
                    score_thresh: float = 0.5, grid_rows: int = 8) -> dict:
    """Turn each instance-prediction file into saliency maps, score every method, write table + grid.

    ``instance_results``: {method name: coco_instances_results.json}; ``saliency_dirs``: {method name: folder of
    SOD maps} (e.g. SGL-KRN's test predictions).  GT maps come from ``gt_mask_dir`` or are derived from ``gt_json``.
    Writes ``<out_dir>/<method>/*.png``, ``comparison.json``, ``comparison.md`` and ``comparison_grid.png``."""
    instance_results, saliency_dirs = dict(instance_results or {}), dict(saliency_dirs or {})
    if not instance_results and not saliency_dirs:
        raise ValueError("give at least one instance-prediction file or saliency folder")
    os.makedirs(out_dir, exist_ok=True)
    coco = _load_coco(gt_json)
    stems = [os.path.splitext(os.path.basename(coco.imgs[i]["file_name"]))[0] for i in sorted(coco.getImgIds())]
    if gt_mask_dir is None:
        gt_mask_dir = os.path.join(out_dir, "GT")
        gt_masks_from_coco(gt_json, gt_mask_dir)
    methods: dict = {}
    for name, path in instance_results.items():
        d = os.path.join(out_dir, name.replace(os.sep, "_").replace(" ", "_"))
        instances_to_saliency(path, gt_json, d, score_thresh)
        methods[name] = d
    for name, d in saliency_dirs.items():
        methods[name] = d
    results = {name: evaluate_saliency(d, gt_mask_dir, names=stems) for name, d in methods.items()}
    with open(os.path.join(out_dir, "comparison.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = format_markdown_table(results, row_title="Method", extra=True,
                                  title="Instance segmentation vs SOD (saliency metrics)")
    with open(os.path.join(out_dir, "comparison.md"), "w") as f:
        f.write(table)
    grid = draw_comparison_grid(image_dir, gt_mask_dir, methods, os.path.join(out_dir, "comparison_grid.png"),
                                names=stems, max_rows=grid_rows)
    return {"metrics": results, "table": table, "grid": grid, "method_dirs": methods, "gt_dir": gt_mask_dir}
