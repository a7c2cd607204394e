"""COCO-style AP for CarDD: pycocotools' COCOeval with CarDD's size buckets.

The paper (Section III-C) calls an instance small below 128^2 pixels, medium from 128^2 to 256^2 and large
above; COCO uses 32^2 / 96^2. Both sets of size buckets are computed from a single COCOeval run (one area range
list holding all seven ranges); each (category, area range, image) cell of COCOeval is computed independently, so
the numbers equal those of a run with only the four ranges of one convention.

Every number is read from ``COCOeval.eval["precision"]`` exactly as ``COCOeval.summarize`` reads it (same
slicing, same ``mean`` of the entries above -1), so values are bit-identical to pycocotools'. Where pycocotools
reports -1 (no ground truth in that cell) the result is NaN, never 0. Values are percentages, like detectron2.
Ground-truth annotation ids that COCOeval cannot match (0, or duplicates) are renumbered internally first, so any
valid ids give the same numbers; unique ids >= 1 (CarDD's) are used unchanged.

Nothing here needs a model: :func:`evaluate_coco_json` takes a ground-truth COCO json and a COCO results list.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.categories import CARDD_AREA_LARGE, CARDD_AREA_SMALL

logger = logging.getLogger(__name__)

__all__ = [
    "CARDD_AREA_RANGES",
    "COCO_AREA_RANGES",
    "SUMMARY_METRICS",
    "resolve_area_ranges",
    "load_coco_gt",
    "load_predictions",
    "run_cocoeval",
    "summarize_cocoeval",
    "evaluate_coco_json",
    "evaluate_coco_api",
]

_MAX_AREA = 1e5**2  # pycocotools' upper bound for "all" and "large"

#: all / small / medium / large, in pixels (pycocotools convention: [lo, hi], both ends inclusive).
CARDD_AREA_RANGES: Tuple[Tuple[float, float], ...] = (
    (0.0, _MAX_AREA),
    (0.0, float(CARDD_AREA_SMALL)),
    (float(CARDD_AREA_SMALL), float(CARDD_AREA_LARGE)),
    (float(CARDD_AREA_LARGE), _MAX_AREA),
)
#: pycocotools' defaults.
COCO_AREA_RANGES: Tuple[Tuple[float, float], ...] = (
    (0.0, _MAX_AREA),
    (0.0, 32.0**2),
    (32.0**2, 96.0**2),
    (96.0**2, _MAX_AREA),
)

#: metric name -> (iou threshold or None for 0.50:0.95, size label)
SUMMARY_METRICS: Dict[str, Tuple[Optional[float], str]] = {
    "AP": (None, "all"),
    "AP50": (0.5, "all"),
    "AP75": (0.75, "all"),
    "APs": (None, "small"),
    "APm": (None, "medium"),
    "APl": (None, "large"),
}
_SIZE_LABELS = ("all", "small", "medium", "large")
_COCO_PREFIX = "coco_"
TASKS = ("bbox", "segm")


def resolve_area_ranges(area_ranges: Union[str, Sequence[Sequence[float]]]) -> List[List[float]]:
    """``"cardd"``, ``"coco"`` or four explicit ``[lo, hi]`` pairs (all, small, medium, large)."""
    if isinstance(area_ranges, str):
        key = area_ranges.lower()
        if key == "cardd":
            return [list(r) for r in CARDD_AREA_RANGES]
        if key == "coco":
            return [list(r) for r in COCO_AREA_RANGES]
        raise ValueError(f"area_ranges must be 'cardd', 'coco' or four [lo, hi] pairs, got {area_ranges!r}")
    ranges = [[float(lo), float(hi)] for lo, hi in area_ranges]
    if len(ranges) != 4:
        raise ValueError(f"area_ranges needs four [lo, hi] pairs (all, small, medium, large), got {len(ranges)}")
    for lo, hi in ranges:
        if not lo <= hi:
            raise ValueError(f"area range [{lo}, {hi}] has lo > hi")
    return ranges


def _nan_if_absent(value: float) -> float:
    """pycocotools' -1 ('no ground truth') becomes NaN; everything else becomes a percentage."""
    return float("nan") if value < 0 else float(value * 100)


def read_json(path: str, what: str):
    """``json.load`` of ``path`` with errors that say which file (``what``, e.g. "predictions json") is wrong."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from None


def load_coco_gt(gt_json: Union[str, os.PathLike, dict, COCO]) -> COCO:
    """A pycocotools COCO object from a path, a dict or a COCO object, with a clear error on bad input."""
    if isinstance(gt_json, COCO):
        return gt_json
    if isinstance(gt_json, dict):
        dataset, source = copy.deepcopy(gt_json), "<ground-truth dict>"
    else:
        source = os.fspath(gt_json)
        dataset = read_json(source, "ground-truth json")
    if not isinstance(dataset, dict):
        raise ValueError(f"ground-truth json {source}: top level must be an object, got {type(dataset).__name__}")
    for key in ("images", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f"ground-truth json {source}: missing list '{key}'")
    dataset.setdefault("annotations", [])
    for ann in dataset["annotations"]:
        for key in ("image_id", "category_id", "bbox", "area"):
            if key not in ann:
                raise ValueError(f"ground-truth json {source}: annotation {ann.get('id', '?')} has no '{key}'")
        ann.setdefault("iscrowd", 0)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_predictions(predictions: Union[str, os.PathLike, Iterable[dict]]) -> Tuple[List[dict], str]:
    """(list of COCO result dicts, a name for error messages) from a json path or an iterable."""
    if isinstance(predictions, (str, os.PathLike)):
        source = os.fspath(predictions)
        data = read_json(source, "predictions json")
        if not isinstance(data, list):
            raise ValueError(f"predictions json {source}: top level must be a list of results")
        return data, source
    return list(predictions), "<predictions list>"


def _check_predictions(coco_gt: COCO, preds: List[dict], task: str, source: str) -> None:
    img_ids = set(coco_gt.getImgIds())
    cat_ids = set(coco_gt.getCatIds())
    need = "segmentation" if task == "segm" else "bbox"
    for i, p in enumerate(preds):
        for key in ("image_id", "category_id", "score", need):
            if key not in p:
                raise ValueError(
                    f"{source}: result {i} has no '{key}' (needed for {task} evaluation)"
                    + (" -- did the model predict masks?" if key == "segmentation" else "")
                )
        if p["image_id"] not in img_ids:
            raise ValueError(f"{source}: result {i} has image_id {p['image_id']!r}, not an image of the ground truth")
        if p["category_id"] not in cat_ids:
            raise ValueError(
                f"{source}: result {i} has category_id {p['category_id']!r}; ground-truth ids are {sorted(cat_ids)}"
            )


def _with_positive_ann_ids(coco_gt: COCO) -> COCO:
    """``coco_gt``, or a copy whose annotations are renumbered 1..N when their ids are not unique positive integers.

    COCOeval stores the matched ground-truth id in ``dtMatches`` and counts a detection as a true positive only
    when that id is non-zero, so a ground-truth annotation with id 0 (many annotation tools count from 0) can never
    be matched, and duplicate ids collapse in ``COCO.anns``. Predictions reference images and categories, never
    annotation ids, so renumbering changes no result; unique ids >= 1 are used as they are.
    """
    anns = coco_gt.dataset.get("annotations", [])
    ids = [a.get("id") for a in anns]
    if all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids) and len(set(ids)) == len(ids):
        return coco_gt
    dataset = dict(coco_gt.dataset)
    dataset["annotations"] = [dict(a, id=k) for k, a in enumerate(anns, start=1)]
    renumbered = COCO()
    renumbered.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        renumbered.createIndex()
    return renumbered


def _load_results(coco_gt: COCO, preds: List[dict], task: str) -> COCO:
    """``coco_gt.loadRes`` on a private copy; an empty result set gives an empty COCO (loadRes cannot)."""
    preds = copy.deepcopy(preds)  # loadRes writes into the dicts (area, id, and box polygons for bbox)
    if task == "segm":
        # Let pycocotools take the detection's area from its mask, not its box (as detectron2 does).
        for p in preds:
            p.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        if preds:
            return coco_gt.loadRes(preds)
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt


def run_cocoeval(
    coco_gt: COCO,
    predictions: List[dict],
    task: str,
    area_ranges: Union[str, Sequence[Sequence[float]]] = "cardd",
    report_coco_sizes: bool = True,
    max_dets_per_image: int = 100,
    img_ids: Optional[Sequence[int]] = None,
    use_fast_impl: bool = False,
    source: str = "<predictions>",
) -> COCOeval:
    """Run COCOeval (evaluate + accumulate, no printing) for one task.

    ``params.areaRng`` holds the four ranges of ``area_ranges`` (labels all/small/medium/large), followed, when
    ``report_coco_sizes``, by COCO's three size ranges (labels coco_small/coco_medium/coco_large).
    ``use_fast_impl`` uses detectron2's compiled COCOeval_opt when it is importable (not the default).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    _check_predictions(coco_gt, predictions, task, source)
    coco_gt = _with_positive_ann_ids(coco_gt)
    coco_dt = _load_results(coco_gt, predictions, task)
    eval_cls = COCOeval
    if use_fast_impl:
        try:
            from detectron2.evaluation.fast_eval_api import COCOeval_opt

            from detectron2 import _C  # noqa: F401  (COCOeval_opt needs the compiled extension)

            eval_cls = COCOeval_opt
        except ImportError:
            logger.warning("detectron2's compiled COCOeval_opt is not available; using pycocotools' COCOeval")
    coco_eval = eval_cls(coco_gt, coco_dt, task)
    ranges = resolve_area_ranges(area_ranges)
    labels = list(_SIZE_LABELS)
    if report_coco_sizes:
        ranges += [list(r) for r in COCO_AREA_RANGES[1:]]
        labels += [_COCO_PREFIX + lbl for lbl in _SIZE_LABELS[1:]]
    coco_eval.params.areaRng = ranges
    coco_eval.params.areaRngLbl = labels
    coco_eval.params.maxDets = [1, 10, int(max_dets_per_image)]
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _mean_precision(coco_eval: COCOeval, iou: Optional[float], size_label: str, k: Optional[int] = None) -> float:
    """Mean precision as COCOeval.summarize computes it (or -1), for all classes or class index ``k``."""
    p = coco_eval.params
    s = coco_eval.eval["precision"]
    if iou is not None:
        t = np.where(iou == p.iouThrs)[0]
        s = s[t]
    aind = [i for i, lbl in enumerate(p.areaRngLbl) if lbl == size_label]
    mind = [len(p.maxDets) - 1]
    if k is None:
        s = s[:, :, :, aind, mind]
    else:
        s = s[:, :, [k], :, :][:, :, :, aind, mind]
    valid = s[s > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def summarize_cocoeval(
    coco_eval: COCOeval,
    class_names: Optional[Mapping[int, str]] = None,
) -> Dict[str, float]:
    """Metrics dict (percent, NaN where undefined) from an accumulated COCOeval.

    Keys: AP, AP50, AP75, APs, APm, APl (sizes of the run's first four area ranges), coco_APs/coco_APm/coco_APl
    when the run has COCO's ranges, and AP-<class>, AP50-<class> for each category id in ``class_names``
    (dataset category id -> name; default: the ground truth's category names).
    """
    labels = list(coco_eval.params.areaRngLbl)
    results: Dict[str, float] = {}
    for name, (iou, size) in SUMMARY_METRICS.items():
        results[name] = _nan_if_absent(_mean_precision(coco_eval, iou, size))
    for size, short in (("small", "s"), ("medium", "m"), ("large", "l")):
        if _COCO_PREFIX + size in labels:
            results[f"{_COCO_PREFIX}AP{short}"] = _nan_if_absent(_mean_precision(coco_eval, None, _COCO_PREFIX + size))
    cat_ids = list(coco_eval.params.catIds)
    if class_names is None:
        class_names = {c["id"]: c["name"] for c in coco_eval.cocoGt.loadCats(cat_ids)}
    for cat_id, name in class_names.items():
        if cat_id not in cat_ids:
            raise ValueError(f"category id {cat_id} ({name}) is not among the evaluated categories {cat_ids}")
        k = cat_ids.index(cat_id)
        results[f"AP-{name}"] = _nan_if_absent(_mean_precision(coco_eval, None, "all", k))
    for cat_id, name in class_names.items():
        k = cat_ids.index(cat_id)
        results[f"AP50-{name}"] = _nan_if_absent(_mean_precision(coco_eval, 0.5, "all", k))
    return results


def evaluate_coco_api(
    coco_gt: COCO,
    predictions: List[dict],
    tasks: Sequence[str] = TASKS,
    area_ranges: Union[str, Sequence[Sequence[float]]] = "cardd",
    report_coco_sizes: bool = True,
    class_names: Optional[Mapping[int, str]] = None,
    max_dets_per_image: int = 100,
    img_ids: Optional[Sequence[int]] = None,
    use_fast_impl: bool = False,
    source: str = "<predictions>",
) -> Dict[str, Dict[str, float]]:
    """{task: metrics} for COCO-format ``predictions`` (dataset category ids) against ``coco_gt``."""
    out: Dict[str, Dict[str, float]] = {}
    for task in tasks:
        coco_eval = run_cocoeval(
            coco_gt,
            predictions,
            task,
            area_ranges=area_ranges,
            report_coco_sizes=report_coco_sizes,
            max_dets_per_image=max_dets_per_image,
            img_ids=img_ids,
            use_fast_impl=use_fast_impl,
            source=source,
        )
        out[task] = summarize_cocoeval(coco_eval, class_names)
    return out


def evaluate_coco_json(
    gt_json: Union[str, os.PathLike, dict, COCO],
    predictions_json_or_list: Union[str, os.PathLike, Iterable[dict]],
    tasks: Sequence[str] = TASKS,
    area_ranges: Union[str, Sequence[Sequence[float]]] = "cardd",
    report_coco_sizes: bool = True,
    max_dets_per_image: int = 100,
    use_fast_impl: bool = False,
) -> Dict[str, Dict[str, float]]:
    """Evaluate a COCO results file/list against a COCO ground-truth json, no detectron2 model needed.

    Predictions use the ground truth's category ids (COCO results format: image_id, category_id, score, bbox
    and/or segmentation as RLE or polygons). Returns ``{task: {metric: percent}}`` like CarDDEvaluator.
    """
    coco_gt = load_coco_gt(gt_json)
    preds, source = load_predictions(predictions_json_or_list)
    return evaluate_coco_api(
        coco_gt,
        preds,
        tasks=tasks,
        area_ranges=area_ranges,
        report_coco_sizes=report_coco_sizes,
        max_dets_per_image=max_dets_per_image,
        use_fast_impl=use_fast_impl,
        source=source,
    )

