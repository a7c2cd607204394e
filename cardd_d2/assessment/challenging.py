"""The paper's "more challenging setting" (Section V-G, Table VI).

Test set = the damaged test images + undamaged images without annotations. The damaged/undamaged classifier first
discards images with P(undamaged) > threshold (0.9); the detector runs on the rest; AP is computed over the whole
extended set, so detections on undamaged images are false positives and discarded images count as images without
detections.

``build_extended_test_set`` writes one COCO json (the test json's images and annotations unchanged, plus one image
entry per undamaged image, marked ``"undamaged": true``, with no annotations). ``run_challenging_setting`` evaluates
with :class:`cardd_d2.evaluation.CarDDEvaluator` and also (``compare=True``) the same detector without the gate on
the extended set and on the damaged test set alone, feeding all three evaluators from a single pass.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Callable, Optional, Sequence

from cardd_sod.fileio import atomic_open, atomic_save_json

from .images import IMAGE_EXTENSIONS, load_image
from .predictor import empty_instances

logger = logging.getLogger(__name__)

__all__ = ["PAPER_TABLE_VI_COUNTS", "build_extended_test_set", "register_coco_dataset", "render_table_vi",
           "run_challenging_setting"]

# What the paper's text states about the setting (Section V-G).
PAPER_TABLE_VI_COUNTS = {"num_damaged": 374, "num_undamaged": 500, "undamaged_discarded": 449,
                         "undamaged_kept_with_detections": 10, "discard_threshold": 0.9}


def build_extended_test_set(test_json: str, image_root: str, undamaged_dir: str, out_json: str,
                            max_undamaged: Optional[int] = None) -> dict:
    """Write the combined json; undamaged ``file_name`` s are relative to ``image_root`` (absolute if impossible).

    Returns ``{"json", "image_root", "num_damaged", "num_undamaged", "undamaged_ids"}``.
    """
    with open(test_json, "r", encoding="utf-8") as f:
        data = json.load(f)
    if not os.path.isdir(undamaged_dir):
        raise FileNotFoundError(f"undamaged image folder not found: {undamaged_dir}")
    files = sorted(n for n in os.listdir(undamaged_dir)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    if max_undamaged is not None:
        files = files[: int(max_undamaged)]
    if not files:
        raise ValueError(f"no undamaged images in {undamaged_dir}")
    from PIL import Image, ImageOps

    images = [dict(im) for im in data["images"]]
    next_id = max([int(im["id"]) for im in images] + [0]) + 1
    undamaged_ids = []
    root_abs = os.path.abspath(image_root)
    for n in files:
        path = os.path.abspath(os.path.join(undamaged_dir, n))
        try:
            with Image.open(path) as im:
                w, h = im.size
                if ImageOps.exif_transpose(im).size != (w, h):
                    w, h = h, w
        except Exception as e:  # noqa: BLE001
            logger.warning("extended test set: skipping unreadable undamaged image %s (%s)", path, e)
            continue
        try:
            rel = os.path.relpath(path, root_abs)
        except ValueError:  # different drive (Windows)
            rel = path
        images.append({"id": next_id, "file_name": rel, "width": int(w), "height": int(h), "undamaged": True})
        undamaged_ids.append(next_id)
        next_id += 1
    out = dict(data)
    out["images"] = images
    out.setdefault("info", {})
    out["info"] = dict(out["info"], description=f"CarDD more challenging setting: {test_json} + {undamaged_dir}")
    atomic_save_json(out, out_json)
    return {"json": out_json, "image_root": image_root, "num_damaged": len(data["images"]),
            "num_undamaged": len(undamaged_ids), "undamaged_ids": undamaged_ids}


def register_coco_dataset(name: str, json_file: str, image_root: str) -> str:
    """Register (or re-register) a COCO damage dataset with :func:`cardd_d2.data.register_coco_damage`."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from cardd_d2.data import register_coco_damage
    from cardd_d2.data.categories import CARDD_CATEGORIES, CARDD_CLASS_NAMES

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_damage(name, json_file, image_root)
    meta = MetadataCatalog.get(name)
    if not meta.get("thing_colors") and list(meta.get("thing_classes", [])) == list(CARDD_CLASS_NAMES):
        meta.thing_colors = [c["color"] for c in CARDD_CATEGORIES]
    return name


def _make_evaluator(dataset_name: str, tasks, output_dir: Optional[str]):
    from cardd_d2.evaluation import CarDDEvaluator

    ev = CarDDEvaluator(dataset_name, tasks=tasks, distributed=False, output_dir=output_dir)
    ev.reset()
    return ev


def run_challenging_setting(
    predictor: Callable,
    gate,
    extended_dataset: str,
    *,
    damaged_dataset: Optional[str] = None,
    output_dir: Optional[str] = None,
    tasks: Optional[Sequence[str]] = ("bbox", "segm"),
    compare: bool = True,
    count_score_threshold: float = 0.0,
    progress: bool = True,
) -> dict:
    """Gate + detector over the registered ``extended_dataset``; returns counts, AP per row and per-image records.

    Rows: ``gated`` (the setting), and with ``compare``: ``ungated`` (same detector, no gate, extended set) and
    ``damaged_only`` (``damaged_dataset``, the original test set; needs its name). An undamaged image "kept
    detections" when the detector returned at least one instance with score >= ``count_score_threshold``.
    """
    from detectron2.data import DatasetCatalog
    from tqdm import tqdm

    dicts = DatasetCatalog.get(extended_dataset)
    sub = (lambda n: os.path.join(output_dir, n)) if output_dir else (lambda n: None)
    evaluators = {"gated": _make_evaluator(extended_dataset, tasks, sub("gated"))}
    if compare:
        evaluators["ungated"] = _make_evaluator(extended_dataset, tasks, sub("ungated"))
        if damaged_dataset:
            evaluators["damaged_only"] = _make_evaluator(damaged_dataset, tasks, sub("damaged_only"))
    damaged_ids = None
    if "damaged_only" in evaluators:
        damaged_ids = {d["image_id"] for d in DatasetCatalog.get(damaged_dataset)}
    counts = {"num_images": 0, "num_damaged": 0, "num_undamaged": 0, "undamaged_discarded": 0,
              "undamaged_kept": 0, "undamaged_kept_with_detections": 0, "damaged_discarded": 0,
              "failed": 0}
    records = []
    for d in tqdm(dicts, desc="challenging setting", unit="img", disable=not progress):
        undamaged = len(d.get("annotations", [])) == 0
        counts["num_images"] += 1
        counts["num_undamaged" if undamaged else "num_damaged"] += 1
        inp = {"image_id": d["image_id"], "file_name": d["file_name"], "height": d["height"], "width": d["width"]}
        try:
            img = load_image(d["file_name"], max_side=10**9)  # never rescale: predictions must match the json
        except Exception as e:  # noqa: BLE001 - count as an image without detections, keep going
            logger.error("challenging setting: %s", e)
            counts["failed"] += 1
            empty = {"instances": empty_instances(d["height"], d["width"])}
            for ev in evaluators.values():
                if ev is not evaluators.get("damaged_only") or d["image_id"] in (damaged_ids or ()):
                    ev.process([inp], [empty])
            records.append({"image_id": d["image_id"], "file": d["file_name"], "undamaged": undamaged,
                            "error": str(e)})
            continue
        p = float(gate.damaged_proba([img.bgr])[0]) if gate is not None else 1.0
        discard = gate is not None and gate.discard(p)
        need_pred = (not discard) or compare
        out = predictor(img.bgr) if need_pred else None
        n_det = 0
        if out is not None:
            inst = out["instances"]
            n_det = int((inst.scores >= count_score_threshold).sum()) if inst.has("scores") else len(inst)
        empty = {"instances": empty_instances(img.height, img.width)}
        evaluators["gated"].process([inp], [empty if discard else out])
        if "ungated" in evaluators:
            evaluators["ungated"].process([inp], [out])
        if "damaged_only" in evaluators and d["image_id"] in damaged_ids:
            evaluators["damaged_only"].process([inp], [out])
        if undamaged:
            if discard:
                counts["undamaged_discarded"] += 1
            else:
                counts["undamaged_kept"] += 1
                counts["undamaged_kept_with_detections"] += int(n_det > 0)
        elif discard:
            counts["damaged_discarded"] += 1
        records.append({"image_id": d["image_id"], "file": d["file_name"], "undamaged": undamaged,
                        "damaged_probability": None if gate is None else round(p, 6), "discarded": discard,
                        "num_detections": n_det})
    results = {name: _to_plain(ev.evaluate()) for name, ev in evaluators.items()}
    res = {"counts": counts, "results": results, "gate": gate.describe() if gate is not None else None,
           "count_score_threshold": count_score_threshold, "images": records}
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        atomic_save_json(res, os.path.join(output_dir, "challenging_results.json"), indent=1, allow_nan=True)
        with atomic_open(os.path.join(output_dir, "table_vi.md")) as f:
            f.write(render_table_vi(res))
    return res


def _to_plain(obj):
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    try:
        return float(obj) if not isinstance(obj, (str, bool, int)) and obj is not None else obj
    except (TypeError, ValueError):
        return str(obj)


def _fmt(v) -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "-" if math.isnan(f) else f"{f:.1f}"


_ROW_LABELS = {"damaged_only": "damaged test set only (no undamaged images)",
               "ungated": "extended set, no classifier",
               "gated": "extended set, classifier gate (Table VI setting)"}


def render_table_vi(res: dict) -> str:
    """Markdown: our AP rows and the gate counts beside the paper's counts."""
    c = res["counts"]
    thr = (res.get("gate") or {}).get("discard_threshold", "-")
    lines = ["## Table VI: more challenging setting (ours)", "",
             "| setting | mask AP | mask AP50 | mask AP75 | box AP | box AP50 | box AP75 |",
             "|---|---|---|---|---|---|---|"]
    for key in ("damaged_only", "ungated", "gated"):
        r = res["results"].get(key)
        if r is None:
            continue
        s, b = r.get("segm", {}), r.get("bbox", {})
        lines.append(f"| {_ROW_LABELS[key]} | {_fmt(s.get('AP'))} | {_fmt(s.get('AP50'))} | {_fmt(s.get('AP75'))} "
                     f"| {_fmt(b.get('AP'))} | {_fmt(b.get('AP50'))} | {_fmt(b.get('AP75'))} |")
    p = PAPER_TABLE_VI_COUNTS
    lines += ["", f"Gate: discard when P(undamaged) > {thr}.", "",
              "| count | ours | paper |", "|---|---|---|",
              f"| damaged test images | {c['num_damaged']} | {p['num_damaged']} |",
              f"| undamaged images | {c['num_undamaged']} | {p['num_undamaged']} |",
              f"| undamaged images discarded by the classifier | {c['undamaged_discarded']} | "
              f"{p['undamaged_discarded']} |",
              f"| undamaged images kept that still produced detections | {c['undamaged_kept_with_detections']} | "
              f"{p['undamaged_kept_with_detections']} |",
              f"| damaged images wrongly discarded | {c['damaged_discarded']} | - |",
              "",
              "AP values are ours; the paper's counts come from its Section V-G text. Detections are counted "
              f"with score >= {res.get('count_score_threshold', 0.0)}."]
    if c.get("failed"):
        lines.append(f"\n{c['failed']} image(s) could not be read and count as images without detections.")
    return "\n".join(lines) + "\n"
