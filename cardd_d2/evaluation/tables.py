"""Markdown tables in the layout of the CarDD paper's result tables, and results.json reading/writing.

A *results dict* is what :class:`CarDDEvaluator` returns: ``{"segm": {"AP": .., "AP50": .., "AP-dent": ..}, "bbox":
{...}}`` (percentages; NaN where undefined). The task keys ``"mask"`` and ``"box"`` are accepted as aliases, so a
hand-written dict of the paper's numbers can use either. Missing and NaN values are shown as "-".
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from ..data.categories import CARDD_CLASS_NAMES
from .coco_metrics import read_json

__all__ = [
    "MAIN_METRICS",
    "render_main_table",
    "render_per_class_table",
    "render_coco_sizes_table",
    "render_results_markdown",
    "write_results",
    "load_results_json",
    "results_to_jsonable",
]

#: results-dict key -> column label, in the paper's column order.
MAIN_METRICS = (("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("APs", "APS"), ("APm", "APM"), ("APl", "APL"))
COCO_SIZE_METRICS = (("coco_APs", "APS (COCO 32²)"), ("coco_APm", "APM (COCO 32²-96²)"), ("coco_APl", "APL (COCO 96²)"))
_TASK_LABEL = {"segm": "mask", "bbox": "box"}
_TASK_ALIASES = {"segm": ("segm", "mask"), "bbox": ("bbox", "box")}


def _task_metrics(result: Optional[Mapping], task: str) -> Mapping:
    if not result:
        return {}
    for key in _TASK_ALIASES.get(task, (task,)):
        if key in result and isinstance(result[key], Mapping):
            return result[key]
    return {}


def _fmt(value, digits: int) -> str:
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v) or math.isinf(v):
        return "-"
    return f"{v:.{digits}f}"


def _md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _ordered_rows(
    rows: Mapping[str, Mapping], paper: Optional[Mapping[str, Mapping]], paper_suffix: str
) -> List[tuple]:
    """(label, results) pairs: each of our methods followed by the paper's row of the same name, then paper-only rows."""
    out = []
    paper = paper or {}
    for name, res in rows.items():
        out.append((name, res))
        if name in paper:
            out.append((f"{name}{paper_suffix}", paper[name]))
    for name, res in paper.items():
        if name not in rows:
            out.append((f"{name}{paper_suffix}", res))
    return out


def render_main_table(
    rows: Mapping[str, Mapping],
    paper: Optional[Mapping[str, Mapping]] = None,
    tasks: Sequence[str] = ("segm", "bbox"),
    digits: int = 1,
    paper_suffix: str = " (paper)",
) -> str:
    """The paper's Table IV/V layout: one row per method; AP, AP50, AP75, APS, APM, APL for mask, then for box.

    ``rows``: method name -> results dict. ``paper``: method name -> results dict of published numbers (any subset of
    metrics); a paper row follows our row of the same name, paper-only methods come last.
    """
    header = ["Method"] + [f"{_TASK_LABEL.get(t, t)} {label}" for t in tasks for _, label in MAIN_METRICS]
    body = []
    for name, res in _ordered_rows(rows, paper, paper_suffix):
        body.append([name] + [_fmt(_task_metrics(res, t).get(key), digits) for t in tasks for key, _ in MAIN_METRICS])
    return _md_table(header, body)


def _class_names_from(results: Iterable[Mapping], task: str, metric: str) -> List[str]:
    prefix = metric + "-"
    seen: List[str] = []
    for res in results:
        for key in _task_metrics(res, task):
            if key.startswith(prefix) and key[len(prefix):] not in seen:
                seen.append(key[len(prefix):])
    if seen and set(seen) <= set(CARDD_CLASS_NAMES):
        return [c for c in CARDD_CLASS_NAMES if c in seen]  # the paper's order
    return seen


def render_per_class_table(
    rows: Mapping[str, Mapping],
    paper: Optional[Mapping[str, Mapping]] = None,
    task: str = "segm",
    metric: str = "AP",
    class_names: Optional[Sequence[str]] = None,
    digits: int = 1,
    paper_suffix: str = " (paper)",
) -> str:
    """Per-class table: one row per method, one column per class (dent, scratch, crack, glass shatter, lamp broken,
    tire flat for CarDD). ``metric`` is "AP" or "AP50" (keys ``AP-<class>`` / ``AP50-<class>``)."""
    ordered = _ordered_rows(rows, paper, paper_suffix)
    if class_names is None:
        class_names = _class_names_from([r for _, r in ordered], task, metric)
    header = ["Method"] + [f"{_TASK_LABEL.get(task, task)} {metric} {c}" for c in class_names]
    body = [
        [name] + [_fmt(_task_metrics(res, task).get(f"{metric}-{c}"), digits) for c in class_names]
        for name, res in ordered
    ]
    return _md_table(header, body)


def render_coco_sizes_table(
    rows: Mapping[str, Mapping], tasks: Sequence[str] = ("segm", "bbox"), digits: int = 1
) -> str:
    """AP by COCO's size buckets (32², 96²), kept apart from the paper's 128²/256² buckets."""
    header = ["Method"] + [f"{_TASK_LABEL.get(t, t)} {label}" for t in tasks for _, label in COCO_SIZE_METRICS]
    body = [
        [name] + [_fmt(_task_metrics(res, t).get(key), digits) for t in tasks for key, _ in COCO_SIZE_METRICS]
        for name, res in rows.items()
    ]
    return _md_table(header, body)


def render_results_markdown(
    results: Mapping, method: str = "ours", paper: Optional[Mapping[str, Mapping]] = None, digits: int = 1
) -> str:
    """The whole results.md for one evaluation: main table, per-class AP and AP50 tables, COCO-size table."""
    rows = {method: results}
    tasks = [t for t in ("segm", "bbox") if _task_metrics(results, t)]
    parts = [
        "# CarDD evaluation\n",
        "Sizes: small < 128², medium 128²–256², large ≥ 256² (mask area of the ground truth; CarDD paper Sec. III-C).\n",
        "## Main results (paper Table IV/V layout)\n",
        render_main_table(rows, paper, tasks=tasks, digits=digits),
    ]
    for task in tasks:
        for metric in ("AP", "AP50"):
            if not _class_names_from([results] + list((paper or {}).values()), task, metric):
                continue
            parts.append(f"## Per-class {_TASK_LABEL[task]} {metric}\n")
            parts.append(render_per_class_table(rows, paper, task=task, metric=metric, digits=digits))
    if any(k.startswith("coco_") for t in tasks for k in _task_metrics(results, t)):
        parts.append("## AP by COCO size buckets (32², 96²), for reference\n")
        parts.append(render_coco_sizes_table(rows, tasks=tasks, digits=digits))
    return "\n".join(parts)


def results_to_jsonable(obj):
    """NaN/inf -> None (strict JSON), recursively; numpy scalars -> float."""
    if isinstance(obj, Mapping):
        return {str(k): results_to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [results_to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, int):
        return obj
    try:
        v = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return None if (math.isnan(v) or math.isinf(v)) else v


def _nulls_to_nan(obj):
    if isinstance(obj, dict):
        return {k: _nulls_to_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nulls_to_nan(v) for v in obj]
    return float("nan") if obj is None else obj


def write_results(
    results: Mapping, output_dir: str, method: str = "ours", meta: Optional[Mapping] = None
) -> Dict[str, str]:
    """Write ``results.json`` (undefined values as null) and ``results.md`` into ``output_dir``; returns the paths."""
    os.makedirs(output_dir, exist_ok=True)
    payload = dict(results)
    if meta:
        payload["meta"] = dict(meta)
    json_path = os.path.join(output_dir, "results.json")
    with open(json_path, "w") as f:
        json.dump(results_to_jsonable(payload), f, indent=2, allow_nan=False)
    md_path = os.path.join(output_dir, "results.md")
    with open(md_path, "w") as f:
        f.write(render_results_markdown(results, method=method))
    return {"json": json_path, "md": md_path}


def load_results_json(path: str) -> Dict[str, Dict[str, float]]:
    """Read a results.json written by :func:`write_results`; null metrics come back as NaN."""
    data = read_json(path, "results file")
    if not isinstance(data, dict):
        raise ValueError(f"results file {path}: top level must be an object of tasks")
    meta = data.pop("meta", None)
    out = _nulls_to_nan(data)
    if meta is not None:
        out["meta"] = meta
    return out
