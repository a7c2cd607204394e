"""Pictures a person can check at a glance: ground truth beside predictions, and the training-loss curve.

Drawing is detectron2's ``Visualizer``; the loss curve reads detectron2's ``metrics.json`` (one JSON object per line,
written by its ``JSONWriter``).
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["read_metrics", "plot_loss_curve", "prediction_grid"]


def read_metrics(metrics_json: str) -> List[Dict]:
    """The training rows of detectron2's metrics.json (evaluation rows have no ``total_loss`` and are skipped)."""
    rows = []
    with open(metrics_json, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                # a run killed mid-write leaves a partial last line; anything else is a real problem
                raise ValueError(f"{metrics_json}: line {n} is not JSON ({e})") from None
            if "total_loss" in row and "iteration" in row:
                rows.append(row)
    return rows


def plot_loss_curve(metrics_json: str, out_png: str, keys: Sequence[str] = ("total_loss",)) -> str:
    """Writes the training loss (and any other logged ``keys``) against the iteration to ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_json)
    if not rows:
        raise ValueError(f"{metrics_json}: no training rows (total_loss) to plot")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        pts = [(r["iteration"], r[key]) for r in rows if key in r]
        if pts:
            it, val = zip(*pts)
            ax.plot(it, val, label=key, linewidth=1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(metrics_json))) or "training loss")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _label_strip(width: int, text: str, height: int = 18) -> np.ndarray:
    import cv2

    strip = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def prediction_grid(predictor, records: Sequence[Dict], metadata, out_png: str, score_threshold: float = 0.5,
                    max_images: int = 8) -> str:
    """A PNG with one row per image: ground truth (left) beside the predictions above ``score_threshold`` (right).

    ``predictor`` is a detectron2 ``DefaultPredictor`` (BGR image in, ``{"instances": ...}`` out); ``records`` are
    dataset dicts with ``file_name`` and ``annotations``; ``metadata`` carries ``thing_classes``.
    """
    import cv2
    from detectron2.utils.visualizer import ColorMode, Visualizer

    rows = []
    for rec in list(records)[:max_images]:
        bgr = cv2.imread(rec["file_name"], cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{rec['file_name']}: cannot read image for the prediction grid")
        rgb = bgr[:, :, ::-1]
        gt = Visualizer(rgb, metadata, instance_mode=ColorMode.SEGMENTATION).draw_dataset_dict(rec).get_image()
        inst = predictor(bgr)["instances"].to("cpu")
        inst = inst[inst.scores >= score_threshold]
        pred = Visualizer(rgb, metadata, instance_mode=ColorMode.SEGMENTATION).draw_instance_predictions(inst)
        pred = pred.get_image()
        name = os.path.basename(rec["file_name"])
        left = np.concatenate([_label_strip(gt.shape[1], f"ground truth: {name}"), gt], axis=0)
        right = np.concatenate([_label_strip(pred.shape[1], f"predicted (score >= {score_threshold:g}): "
                                                             f"{len(inst)}"), pred], axis=0)
        gap = np.full((left.shape[0], 6, 3), 255, np.uint8)
        rows.append(np.concatenate([left, gap, right], axis=1))
    if not rows:
        raise ValueError("prediction_grid: no records to draw")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    if not cv2.imwrite(out_png, grid[:, :, ::-1]):
        raise OSError(f"{out_png}: could not write the prediction grid")
    return out_png
