"""Class-wise SOD experiments (paper Table IX): one SOD dataset per damage class, train + test a model on each.

For each class only that class's instances are activated in the masks.  Test (and validation) sets hold the images
that contain the class, as the released evaluation read them.  The training set is a named choice (``train_set``),
because the release does not tell which one trained the published models: ``"all"`` (default; every training image,
empty masks where the class is absent -- what the released generator's last state writes) or ``"subset"`` (only the
images that contain the class).  Each class gets ``<work_dir>/data/<slug>/CarDD-{TR,VAL,TE}`` and a run
folder ``<work_dir>/runs/<slug>`` (config + overrides, ``DATA.ROOT`` and ``OUTPUT_DIR`` set per class).  The table has
one row per class and the Table VIII metric columns.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Optional, Sequence

from .config import setup_sod_cfg
from .data.coco import coco_to_sod_classwise
from .metrics import format_markdown_table

__all__ = ["build_classwise_datasets", "run_classwise", "render_classwise_table", "TRAIN_SETS"]


TRAIN_SETS = ("all", "subset")


def build_classwise_datasets(sources: Mapping[str, tuple], out_root: str,
                             categories: Optional[Sequence] = None, train_set: str = "all",
                             train_split: str = "TR", **kwargs) -> dict:
    """``sources``: {split: (coco json, image dir)}; returns {slug: {"category": name, split: summary}}."""
    if train_set not in TRAIN_SETS:
        raise ValueError(f"class-wise train_set must be one of {TRAIN_SETS}, got {train_set!r}")
    out: dict = {}
    for split, (jp, dp) in sources.items():
        keep_empty = split == train_split and train_set == "all"
        for slug, info in coco_to_sod_classwise(jp, dp, out_root, split, categories, keep_empty, **kwargs).items():
            out.setdefault(slug, {"category": info["category"], "root": os.path.join(out_root, slug)})[
                info["split"]] = info
    return out


def render_classwise_table(results: Mapping[str, Mapping], model: str = "", extra: bool = False) -> str:
    title = f"Class-wise SOD results{(' of ' + model) if model else ''} (Table IX layout)"
    return format_markdown_table(results, row_title="Class", extra=extra, title=title)


def run_classwise(model: str, sources: Mapping[str, tuple], work_dir: str, config_file: Optional[str] = None,
                  overrides: Sequence[str] = (), categories: Optional[Sequence] = None, train_set: str = "all",
                  train_split: str = "TR", test_split: str = "TE", progress: bool = True,
                  image_mode: str = "copy") -> dict:
    """Build the class-wise datasets, train and test ``model`` on each; returns metrics per class + table."""
    from .engine import SODTrainer
    if train_split not in sources or test_split not in sources:
        raise ValueError(f"need COCO sources for splits {train_split} and {test_split}, got {sorted(sources)}")
    if config_file is None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        config_file = os.path.join(here, "configs", "SOD", f"{model}.yaml")
    data_root = os.path.join(work_dir, "data")
    datasets = build_classwise_datasets(sources, data_root, categories, train_set, train_split, image_mode=image_mode)
    results, skipped = {}, {}
    for slug, info in datasets.items():
        tr, te = info.get(train_split, {}), info.get(test_split, {})
        n_tr, n_te = tr.get("num_images", 0), te.get("num_images", 0)
        n_tr_cls = n_tr - tr.get("num_empty", 0)
        if n_tr_cls == 0 or n_te == 0:
            skipped[info["category"]] = f"no images with this class (train {n_tr_cls}, test {n_te})"
            continue
        cfg = setup_sod_cfg(config_file, list(overrides) + [
            "MODEL.NAME", model, "DATA.ROOT", info["root"], "DATA.TRAIN_SPLIT", train_split,
            "DATA.TEST_SPLIT", test_split, "OUTPUT_DIR", os.path.join(work_dir, "runs", slug)])
        out = SODTrainer(cfg, progress=progress).train(evaluate=True)
        m = dict(out["metrics"])
        m.update({"num_train_images": n_tr, "num_train_images_with_class": n_tr_cls, "num_test_images": n_te,
                  "train_set": train_set})
        results[info["category"]] = m
    table = render_classwise_table(results, model)
    if skipped:
        table += "\n" + "\n".join(f"- {k}: skipped ({v})" for k, v in skipped.items()) + "\n"
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "classwise_results.json"), "w") as f:
        json.dump({"model": model, "train_set": train_set, "results": results, "skipped": skipped}, f, indent=2)
    with open(os.path.join(work_dir, "classwise_results.md"), "w") as f:
        f.write(table)
    return {"results": results, "skipped": skipped, "table": table, "datasets": datasets,
            "slugs": {info["category"]: slug for slug, info in datasets.items()}}

