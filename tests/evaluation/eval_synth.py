"""Tiny synthetic ground truth + predictions for the evaluation tests, and a plain-pycocotools reference.

(A uniquely named module, not conftest, so test modules can import it without clashing with other conftest files.)
"""
import copy
import json

import numpy as np
import pycocotools.mask as mask_util

from cardd_d2.data.categories import CARDD_CATEGORIES

IMG_W, IMG_H = 640, 480
# Side lengths spanning COCO's (32, 96) and CarDD's (128, 256) bucket edges.
SIDES = [14, 24, 40, 60, 90, 110, 125, 140, 170, 200, 240, 265, 300, 340]
EMPTY_IMAGE_ID = 9
NO_GT_CATEGORY = 6  # "tire flat": no ground truth at all


def polygon(x, y, w, h, kind):
    if kind == 0:  # rectangle
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    if kind == 1:  # diamond: mask area is half the box area
        return [x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]
    return [x, y, x + w, y + h / 3, x + w / 3, y + h]  # triangle


def rle_of(poly, h=IMG_H, w=IMG_W):
    rle = mask_util.merge(mask_util.frPyObjects([poly], h, w))
    return rle


def jsonable_rle(rle):
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def make_gt(seed=0, n_images=10, categories=None):
    rng = np.random.RandomState(seed)
    categories = copy.deepcopy(categories or [{k: c[k] for k in ("id", "name", "supercategory")} for c in CARDD_CATEGORIES])
    cat_ids = [c["id"] for c in categories]
    gt_cats = [c for c in cat_ids if c != NO_GT_CATEGORY] if len(cat_ids) == 6 else cat_ids
    images, anns = [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "file_name": f"{img_id:06d}.jpg", "width": IMG_W, "height": IMG_H})
        if img_id == EMPTY_IMAGE_ID:
            continue
        for _ in range(rng.randint(1, 5)):
            w = float(rng.choice(SIDES))
            h = float(min(IMG_H - 2, max(10.0, w * rng.uniform(0.6, 1.4))))
            x = float(rng.uniform(0, IMG_W - w - 1))
            y = float(rng.uniform(0, IMG_H - h - 1))
            poly = polygon(x, y, w, h, rng.randint(0, 3))
            rle = rle_of(poly)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": int(rng.choice(gt_cats)),
                    "segmentation": [poly],
                    "area": float(mask_util.area(rle)),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                    "iscrowd": 0,
                    "attributes": {"occluded": False},
                }
            )
    return {"images": images, "annotations": anns, "categories": categories}


def make_predictions(gt, seed=1):
    """COCO results (dataset category ids) with bbox and RLE segmentation: jittered GT, confusions, false positives."""
    rng = np.random.RandomState(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    preds = []

    def add(img_id, cat, x, y, w, h, kind, shape=None):
        x, y = float(np.clip(x, 0, IMG_W - 4)), float(np.clip(y, 0, IMG_H - 4))
        w, h = float(np.clip(w, 3, IMG_W - x - 1)), float(np.clip(h, 3, IMG_H - y - 1))
        if shape is None:
            poly = polygon(x, y, w, h, kind)
        else:  # the ground-truth polygon moved and scaled into the new box
            (x0, y0, w0, h0), pts = shape
            poly = [x + (v - x0) * w / w0 if i % 2 == 0 else y + (v - y0) * h / h0 for i, v in enumerate(pts)]
        rle = rle_of(poly)
        preds.append(
            {
                "image_id": img_id,
                "category_id": int(cat),
                "bbox": [x, y, w, h],
                "score": float(rng.uniform(0.05, 1.0)),
                "segmentation": jsonable_rle(rle),
            }
        )

    for ann in gt["annotations"]:
        if rng.rand() < 0.85:
            x, y, w, h = ann["bbox"]
            j = rng.uniform(-0.15, 0.15, size=4)
            cat = ann["category_id"] if rng.rand() < 0.8 else rng.choice(cat_ids)
            shape = (ann["bbox"], ann["segmentation"][0]) if rng.rand() < 0.8 else None
            add(ann["image_id"], cat, x + j[0] * w, y + j[1] * h, w * (1 + j[2]), h * (1 + j[3]), rng.randint(0, 3), shape)
    for img in gt["images"]:
        for _ in range(rng.randint(0, 3)):
            w = float(rng.choice(SIDES))
            add(img["id"], rng.choice(cat_ids), rng.uniform(0, IMG_W - w), rng.uniform(0, IMG_H - w), w, w, rng.randint(0, 3))
    return preds


def pycocotools_stats(gt, preds, task, area_rng=None, cat_ids=None):
    """Plain pycocotools: COCOeval + summarize, optional areaRng / catIds. Returns stats (fractions, -1 = absent)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        dts = copy.deepcopy(preds)
        if task == "segm":
            for d in dts:
                d.pop("bbox", None)
        coco_dt = coco_gt.loadRes(dts)
        ev = COCOeval(coco_gt, coco_dt, task)
        if area_rng is not None:
            ev.params.areaRng = area_rng
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
