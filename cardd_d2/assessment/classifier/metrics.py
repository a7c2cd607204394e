"""Accuracy, precision, recall (damaged = positive) and FP/FN as shares of the test set, as the paper reports them.

FP = undamaged image predicted damaged, FN = damaged image predicted undamaged.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .model import CLASS_NAMES

__all__ = ["PAPER_CLASSIFIER_METRICS", "binary_metrics", "format_metrics", "save_confusion_png"]


def binary_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict:
    """Accuracy, precision, recall (damaged = positive) and FP/FN as shares of the test set; confusion [[TN,FP],[FN,TP]]."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = int(len(y_true))
    tp = int(((y_true == 1) & (y_pred == 1)).sum())
    tn = int(((y_true == 0) & (y_pred == 0)).sum())
    fp = int(((y_true == 0) & (y_pred == 1)).sum())
    fn = int(((y_true == 1) & (y_pred == 0)).sum())
    div = lambda a, b: float(a) / b if b else 0.0  # noqa: E731
    return {
        "n": n, "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "accuracy": div(tp + tn, n), "precision": div(tp, tp + fp), "recall": div(tp, tp + fn),
        "fp_share": div(fp, n), "fn_share": div(fn, n),
        "confusion": [[tn, fp], [fn, tp]],
    }


# Paper, Section IV (500 + 500 test images).
PAPER_CLASSIFIER_METRICS = {"accuracy": 0.943, "precision": 0.916, "recall": 0.976, "fp_share": 0.045, "fn_share": 0.012}


def format_metrics(m: dict, with_paper: bool = True) -> str:
    rows = [("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"),
            ("fp_share", "FP (share of test set)"), ("fn_share", "FN (share of test set)")]
    lines = [f"{'metric':<24}{'ours':>8}" + (f"{'paper':>8}" if with_paper else "")]
    for k, label in rows:
        line = f"{label:<24}{100 * m[k]:>7.1f}%"
        if with_paper:
            line += f"{100 * PAPER_CLASSIFIER_METRICS[k]:>7.1f}%"
        lines.append(line)
    lines.append(f"(n={m['n']}: TP {m['tp']}, TN {m['tn']}, FP {m['fp']}, FN {m['fn']})")
    return "\n".join(lines)


def save_confusion_png(confusion, path: str, class_names: Sequence[str] = CLASS_NAMES) -> str:
    """Save a 2x2 confusion matrix (rows = true, columns = predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), labels=list(class_names))
    ax.set_yticks(range(len(class_names)), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thr = cm.max() / 2.0 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if cm[i, j] > thr else "black")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
