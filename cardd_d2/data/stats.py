"""Dataset statistics in the style of the CarDD paper's Fig. 5 (class counts, size buckets, object sizes).

* per-class instance counts;
* share of small / medium / large instances per class (Fig. 5b), CarDD's buckets: area < 128^2, < 256^2, >= 256^2;
* distribution of object size per class (Fig. 5c) as a histogram of sqrt(area) in pixels;
* image resolution: min / max / mean width, height and pixel count, smallest and largest image.

The instance size is the annotation's ``area`` (the mask area, what pycocotools evaluates with); for
dataset dicts without it, the area of the rasterised polygons (or the box when there is no mask).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter, OrderedDict
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from .categories import CARDD_AREA_LARGE, CARDD_AREA_SMALL, size_bucket

__all__ = ["dataset_stats", "stats_from_coco_json", "stats_from_dataset_dicts", "write_dataset_stats"]

BUCKETS = ("small", "medium", "large")


def _summary(values: Sequence[float]) -> Dict[str, float]:
    if len(values) == 0:
        return {"count": 0, "mean": None, "median": None, "min": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {"count": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)), "min": float(a.min()),
            "max": float(a.max())}


def _compute(
    source: str,
    class_names: Sequence[str],
    images: Sequence[Tuple[int, int]],
    instances: Iterable[Tuple[int, float]],
    instances_per_image: Sequence[int],
    bin_width: float,
) -> dict:
    """Statistics from image sizes (w, h) and instances (contiguous class index, area)."""
    instances = list(instances)
    per_class_areas: Dict[str, List[float]] = OrderedDict((n, []) for n in class_names)
    for c, area in instances:
        per_class_areas[class_names[c]].append(float(area))
    all_areas = [a for _, a in instances]

    def buckets(areas):
        c = Counter(size_bucket(a) for a in areas)
        n = len(areas)
        return OrderedDict((b, {"count": c[b], "share": (c[b] / n) if n else None}) for b in BUCKETS)

    max_side = max([math.sqrt(a) for a in all_areas], default=0.0)
    edges = np.arange(0.0, (math.floor(max_side / bin_width) + 1) * bin_width + 1e-9, bin_width)
    if len(edges) < 2:
        edges = np.array([0.0, bin_width])

    def hist(areas):
        h, _ = np.histogram(np.sqrt(np.asarray(areas, dtype=np.float64)), bins=edges)
        return [int(v) for v in h]

    ws = np.array([w for w, _ in images], dtype=np.float64)
    hs = np.array([h for _, h in images], dtype=np.float64)
    px = ws * hs
    if len(images):
        i_min, i_max = int(np.argmin(px)), int(np.argmax(px))
        resolution = {
            "smallest_image": [int(ws[i_min]), int(hs[i_min])],
            "largest_image": [int(ws[i_max]), int(hs[i_max])],
            "min_width": int(ws.min()), "max_width": int(ws.max()), "mean_width": float(ws.mean()),
            "min_height": int(hs.min()), "max_height": int(hs.max()), "mean_height": float(hs.mean()),
            "min_pixels": int(px.min()), "max_pixels": int(px.max()), "mean_pixels": float(px.mean()),
            "resolutions": [[int(w), int(h), n] for (w, h), n in sorted(Counter(zip(ws, hs)).items())],
        }
    else:
        resolution = {}
    ipi = Counter(int(k) for k in instances_per_image)
    return {
        "source": source,
        "classes": list(class_names),
        "num_images": len(images),
        "num_instances": len(instances),
        "num_images_without_instances": int(ipi.get(0, 0)),
        "instances_per_image": {"mean": float(np.mean(instances_per_image)) if len(instances_per_image) else None,
                                "max": max(instances_per_image, default=0),
                                "histogram": {str(k): ipi[k] for k in sorted(ipi)}},
        "instances_per_class": OrderedDict((n, len(a)) for n, a in per_class_areas.items()),
        "size_buckets": {
            "definition": {"small": f"area < {CARDD_AREA_SMALL}", "medium": f"{CARDD_AREA_SMALL} <= area < "
                           f"{CARDD_AREA_LARGE}", "large": f"area >= {CARDD_AREA_LARGE}"},
            "all": buckets(all_areas),
            "per_class": OrderedDict((n, buckets(a)) for n, a in per_class_areas.items()),
        },
        "object_size": {
            "measure": "sqrt(area) in pixels",
            "bin_edges": [float(e) for e in edges],
            "all": dict(_summary(np.sqrt(all_areas)), histogram=hist(all_areas)),
            "per_class": OrderedDict(
                (n, dict(_summary(np.sqrt(a)), histogram=hist(a), area=_summary(a))) for n, a in per_class_areas.items()
            ),
        },
        "image_resolution": resolution,
    }


def stats_from_coco_json(json_file: str, bin_width: float = 16.0) -> dict:
    """Statistics of a COCO instances json (category order = ids sorted)."""
    from .validation import json_categories, read_coco_json

    data = read_coco_json(json_file)
    cats = json_categories(data, json_file)
    ids = sorted(cats)
    index = {cid: k for k, cid in enumerate(ids)}
    per_image = Counter()
    instances = []
    for a in data["annotations"]:
        if a.get("category_id") not in index:
            continue
        area = a.get("area")
        if area is None:
            w, h = a["bbox"][2:]
            area = w * h
        instances.append((index[a["category_id"]], float(area)))
        per_image[a.get("image_id")] += 1
    images = [(im["width"], im["height"]) for im in data["images"]]
    counts = [per_image.get(im["id"], 0) for im in data["images"]]
    return _compute(json_file, [cats[i] for i in ids], images, instances, counts, bin_width)


def _dict_area(ann: dict, h: int, w: int) -> float:
    from pycocotools import mask as mask_utils

    if "area" in ann:
        return float(ann["area"])
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        return float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(seg, h, w))))
    if isinstance(seg, dict):
        rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
        return float(mask_utils.area(rle))
    from detectron2.structures import BoxMode

    x0, y0, x1, y1 = BoxMode.convert(ann["bbox"], ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
    return float(max(0.0, x1 - x0) * max(0.0, y1 - y0))


def stats_from_dataset_dicts(dicts: Sequence[dict], class_names: Sequence[str], source: str = "dataset",
                             bin_width: float = 16.0) -> dict:
    """Statistics of detectron2 dataset dicts (contiguous ``category_id``)."""
    images, instances, counts = [], [], []
    for d in dicts:
        w, h = int(d["width"]), int(d["height"])
        images.append((w, h))
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        counts.append(len(anns))
        instances.extend((int(a["category_id"]), _dict_area(a, h, w)) for a in anns)
    return _compute(source, class_names, images, instances, counts, bin_width)


def dataset_stats(dataset: str, bin_width: float = 16.0) -> dict:
    """Statistics of a registered dataset name or of a COCO json path.

    A registered dataset with a ``json_file`` in its metadata is read from that json (annotation ``area``s);
    otherwise its dataset dicts are used.
    """
    if dataset.endswith(".json") and os.path.isfile(dataset):
        return stats_from_coco_json(dataset, bin_width)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if dataset not in DatasetCatalog.list():
        raise KeyError(f"dataset {dataset!r} is neither a registered dataset nor an existing .json file")
    meta = MetadataCatalog.get(dataset)
    json_file = meta.get("json_file", None)
    if json_file and os.path.isfile(json_file):
        out = stats_from_coco_json(json_file, bin_width)
    else:
        dicts = DatasetCatalog.get(dataset)
        out = stats_from_dataset_dicts(dicts, meta.thing_classes, dataset, bin_width)
    out["dataset"] = dataset
    return out


# ----------------------------------------------------------------------------------------------- output
def write_dataset_stats(stats: dict, output_dir: str, prefix: str = "", plots: bool = True) -> Dict[str, str]:
    """Write ``<prefix>stats.json`` and (with ``plots``) PNG figures into ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, f"{prefix}stats.json")}
    with open(paths["json"], "w") as f:
        json.dump(stats, f, indent=2)
    if plots:
        paths.update(_plot(stats, output_dir, prefix))
    return paths


def _plot(stats: dict, output_dir: str, prefix: str) -> Dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = stats["classes"]
    title = os.path.basename(str(stats.get("dataset") or stats["source"]))
    out = {}
    x = np.arange(len(names))

    fig, ax = plt.subplots(figsize=(7, 4))
    counts = [stats["instances_per_class"][n] for n in names]
    ax.bar(x, counts, color="tab:blue")
    for xi, c in zip(x, counts):
        ax.text(xi, c, str(c), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("instances")
    ax.set_title(f"{title}: instances per class")
    out["class_counts"] = _save(fig, output_dir, f"{prefix}class_counts.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(names))
    for b, color in zip(BUCKETS, ("tab:green", "tab:orange", "tab:red")):
        share = np.array([(stats["size_buckets"]["per_class"][n][b]["share"] or 0.0) * 100 for n in names])
        ax.bar(x, share, bottom=bottom, label=b, color=color)
        bottom += share
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("share of instances (%)")
    ax.set_ylim(0, 100)
    ax.legend(title="CarDD size", fontsize=8)
    ax.set_title(f"{title}: small (<128²) / medium / large (≥256²) per class")
    out["size_buckets"] = _save(fig, output_dir, f"{prefix}size_buckets.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.asarray(stats["object_size"]["bin_edges"])
    for n in names:
        h = np.asarray(stats["object_size"]["per_class"][n]["histogram"], dtype=np.float64)
        if h.sum() > 0:
            ax.stairs(h / h.sum() * 100, edges, label=n)
    for t in (128, 256):
        ax.axvline(t, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("sqrt(instance area) (px)")
    ax.set_ylabel("share of the class's instances (%)")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: object size distribution per class")
    out["object_sizes"] = _save(fig, output_dir, f"{prefix}object_sizes.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    res = stats["image_resolution"].get("resolutions", [])
    if res:
        r = np.asarray(res, dtype=np.float64)
        ax.scatter(r[:, 0], r[:, 1], s=10 + 40 * r[:, 2] / r[:, 2].max(), alpha=0.6)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    mean_px = stats["image_resolution"].get("mean_pixels")
    ax.set_title(f"{title}: image sizes" + (f" (mean {mean_px:,.0f} px)" if mean_px else ""))
    out["image_resolution"] = _save(fig, output_dir, f"{prefix}image_resolution.png")
    return out


def _save(fig, output_dir, name):
    import matplotlib.pyplot as plt

    path = os.path.join(output_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
