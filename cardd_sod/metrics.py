"""SOD metrics as in the paper's Tables VIII/IX, computed with py-sod-metrics (``import py_sod_metrics``).

Per image the prediction is min-max normalised to [0, 1] and the GT binarised with ``> 128`` (py-sod-metrics'
``prepare_data``, = the authors' MATLAB toolbox).  Columns (names used in JSON and tables):

* ``F_beta``  adaptive F-measure, threshold ``>= min(2 mean(pred), 1)``, beta^2 = 0.3
  (``Fmeasure(beta=0.3)['fm']['adp']``)
* ``wF_beta`` weighted F-measure, beta = 1 (``WeightedFmeasure()['wfm']``)
* ``S_m``     S-measure, alpha = 0.5 (``Smeasure()['sm']``)
* ``E_m``     E-measure of the authors' toolbox: threshold = mean(pred) with a strict ``>``.  py-sod-metrics has no
  ready variant (its adaptive E uses 2 x mean and ``>=``), so the binarised map ``pred > mean(pred)`` is handed to
  py-sod-metrics' ``Emeasure.cal_em_with_threshold`` with threshold 0.5, which then computes the enhanced-alignment
  score of exactly that binary map.
* ``MAE``     mean absolute error (``MAE()['mae']``)
* extras: ``maxF`` / ``meanF`` (max / mean over the 256-threshold F curve, beta^2 0.3), ``adpE_pysod`` (py-sod-metrics'
  adaptive E, 2 x mean, ``>=``), ``meanE`` / ``maxE`` (mean / max over its 256-threshold E curve).

Matching and resizing: predictions are matched to GT by file stem (any image extension).  A prediction whose size
differs from its GT is resized to the GT size with bilinear interpolation (``cv2.INTER_LINEAR`` on the uint8 map), as
the py-sod-metrics based evaluators (PySODEvalToolkit) do; the GT is never resized.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Iterable, Mapping, Optional, Sequence

import cv2
import numpy as np

from .fileio import IMAGE_EXTENSIONS

__all__ = [
    "TABLE_COLUMNS", "EXTRA_COLUMNS", "SaliencyEvaluator", "evaluate_saliency", "match_predictions",
    "authors_emeasure", "format_markdown_table", "write_results",
]

TABLE_COLUMNS = ("F_beta", "wF_beta", "S_m", "E_m", "MAE")
EXTRA_COLUMNS = ("maxF", "meanF", "adpE_pysod", "meanE", "maxE")
COLUMN_TITLES = {"F_beta": "F<sub>β</sub>", "wF_beta": "wF<sub>β</sub>", "S_m": "S<sub>m</sub>",
                 "E_m": "E<sub>m</sub>", "MAE": "MAE"}


def _psm():
    import py_sod_metrics
    return py_sod_metrics


def authors_emeasure(pred: np.ndarray, gt: np.ndarray) -> float:
    """E-measure with threshold mean(pred) and strict '>' on a normalised pred (float [0,1]) and bool gt."""
    em = _psm().Emeasure()
    em.gt_fg_numel = int(np.count_nonzero(gt))
    em.gt_size = int(gt.shape[0] * gt.shape[1])
    binary = (pred > pred.mean()).astype(np.float64)
    return float(em.cal_em_with_threshold(binary, gt, threshold=0.5))


class SaliencyEvaluator:
    """Accumulates py-sod-metrics over (pred, gt) uint8 grey-level pairs of equal size."""

    def __init__(self):
        psm = _psm()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Fmeasure's deprecation note; it is the class whose numbers match the toolbox's
            self.fm = psm.Fmeasure(beta=0.3)
        self.wfm = psm.WeightedFmeasure(beta=1)
        self.sm = psm.Smeasure(alpha=0.5)
        self.em = psm.Emeasure()
        self.mae = psm.MAE()
        self.authors_em: list[float] = []
        self.names: list[str] = []
        self.per_image: list[dict] = []

    def step(self, pred: np.ndarray, gt: np.ndarray, name: str = "") -> None:
        if pred.dtype != np.uint8 or gt.dtype != np.uint8:
            raise TypeError(f"{name}: pred and gt must be uint8 grey-level maps, got {pred.dtype}/{gt.dtype}")
        if pred.shape != gt.shape:
            raise ValueError(f"{name}: pred {pred.shape} and gt {gt.shape} differ (resize first)")
        for m in (self.fm, self.wfm, self.sm, self.em, self.mae):
            m.step(pred=pred, gt=gt)
        from py_sod_metrics.utils import prepare_data
        p, g = prepare_data(pred, gt)
        self.authors_em.append(authors_emeasure(p, g))
        self.names.append(name)
        self.per_image.append({
            "name": name, "F_beta": float(self.fm.adaptive_fms[-1]), "wF_beta": float(self.wfm.weighted_fms[-1]),
            "S_m": float(self.sm.sms[-1]), "E_m": float(self.authors_em[-1]), "MAE": float(self.mae.maes[-1]),
        })

    def results(self) -> dict:
        if not self.names:
            raise ValueError("no images were evaluated")
        fm = self.fm.get_results()["fm"]
        em = self.em.get_results()["em"]
        return {
            "F_beta": float(fm["adp"]),
            "wF_beta": float(self.wfm.get_results()["wfm"]),
            "S_m": float(self.sm.get_results()["sm"]),
            "E_m": float(np.mean(np.asarray(self.authors_em, np.float64))),
            "MAE": float(self.mae.get_results()["mae"]),
            "maxF": float(fm["curve"].max()),
            "meanF": float(fm["curve"].mean()),
            "adpE_pysod": float(em["adp"]),
            "meanE": float(em["curve"].mean()),
            "maxE": float(em["curve"].max()),
            "num_images": len(self.names),
        }


def _index_dir(d: str, what: str, suffix: str = "") -> dict:
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{what} folder not found: {d}")
    out: dict = {}
    for f in sorted(os.listdir(d)):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if suffix and stem.endswith(suffix):
            stem = stem[: -len(suffix)]
        if stem in out:
            raise ValueError(f"{what} folder {d} has two files for {stem!r}: {out[stem]} and {f}")
        out[stem] = os.path.join(d, f)
    return out


def match_predictions(pred_dir: str, gt_dir: str, names: Optional[Iterable[str]] = None,
                      pred_suffix: str = "") -> list[tuple[str, str, str]]:
    """[(stem, pred_path, gt_path)] for every GT (or every name in ``names``); missing predictions raise."""
    gts = _index_dir(gt_dir, "ground-truth")
    preds = _index_dir(pred_dir, "prediction", pred_suffix)
    wanted = list(names) if names is not None else sorted(gts)
    if not wanted:
        raise ValueError(f"no ground-truth maps in {gt_dir}")
    missing_gt = [n for n in wanted if n not in gts]
    if missing_gt:
        raise FileNotFoundError(f"{len(missing_gt)} ground-truth maps missing in {gt_dir}: {missing_gt[:20]}")
    missing = [n for n in wanted if n not in preds]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(wanted)} predictions missing in {pred_dir}: "
                                f"{missing[:20]}{' ...' if len(missing) > 20 else ''}")
    return [(n, preds[n], gts[n]) for n in wanted]


def _read_grey(path: str, what: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"unreadable {what} map: {path}")
    return img


def evaluate_saliency(pred_dir: str, gt_dir: str, names: Optional[Iterable[str]] = None, pred_suffix: str = "",
                      per_image: bool = False) -> dict:
    """Evaluate saliency maps in ``pred_dir`` against GT masks in ``gt_dir`` (matched by stem).

    Returns the Table VIII columns, the extra columns, ``num_images`` and, with ``per_image``, a per-image list."""
    ev = SaliencyEvaluator()
    resized = []
    for stem, ppath, gpath in match_predictions(pred_dir, gt_dir, names, pred_suffix):
        gt = _read_grey(gpath, "ground-truth")
        pred = _read_grey(ppath, "prediction")
        if pred.shape != gt.shape:
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
            resized.append(stem)
        ev.step(pred, gt, stem)
    res = ev.results()
    res["num_resized"] = len(resized)
    if per_image:
        res["per_image"] = ev.per_image
    return res


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)


def format_markdown_table(rows: Mapping[str, Mapping], row_title: str = "Method",
                          columns: Sequence[str] = TABLE_COLUMNS, extra: bool = False,
                          title: str = "") -> str:
    """Markdown table in the layout of the paper's Table VIII (methods) / IX (classes)."""
    cols = list(columns) + (list(EXTRA_COLUMNS) if extra else [])
    head = [row_title] + [COLUMN_TITLES.get(c, c) + (" ↓" if c == "MAE" else "") for c in cols]
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                          "|" + "---|" * len(head)]
    for name, r in rows.items():
        lines.append("| " + " | ".join([str(name)] + [_fmt(r.get(c, "-")) for c in cols]) + " |")
    return "\n".join(lines) + "\n"


def write_results(results: Mapping, out_dir: str, name: str = "sod_metrics", row: str = "model",
                  row_title: str = "Method") -> dict:
    """Write ``<name>.json`` and ``<name>.md`` (one-row table) into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    jp, mp = os.path.join(out_dir, name + ".json"), os.path.join(out_dir, name + ".md")
    with open(jp, "w") as f:
        json.dump(dict(results), f, indent=2)
    summary = {k: v for k, v in results.items() if k != "per_image"}
    with open(mp, "w") as f:
        f.write(format_markdown_table({row: summary}, row_title=row_title, extra=True))
    return {"json": jp, "markdown": mp}
