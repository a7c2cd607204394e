"""cardd_d2.evaluation.figures: the quickstart's prediction grid and loss curve."""
import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import Metadata
from detectron2.structures import Boxes, Instances

from cardd_d2.evaluation.figures import plot_loss_curve, prediction_grid, read_metrics


def _write_metrics(path, rows, tail=""):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(tail)


def test_read_metrics_keeps_training_rows_and_names_a_bad_line(tmp_path):
    p = tmp_path / "metrics.json"
    _write_metrics(p, [{"iteration": 0, "total_loss": 3.0}, {"iteration": 19, "segm/AP": 1.0},
                       {"iteration": 19, "total_loss": 2.0, "loss_cls": 0.5}])
    assert [r["iteration"] for r in read_metrics(str(p))] == [0, 19]
    _write_metrics(p, [{"iteration": 0, "total_loss": 3.0}], tail='{"iteration": 1, "tot')
    with pytest.raises(ValueError, match=r"metrics.json: line 2"):
        read_metrics(str(p))


def test_loss_curve_png(tmp_path):
    p = tmp_path / "metrics.json"
    _write_metrics(p, [{"iteration": i, "total_loss": 3.0 / (i + 1), "loss_cls": 1.0 / (i + 1)} for i in range(20)])
    out = plot_loss_curve(str(p), str(tmp_path / "curve.png"), keys=("total_loss", "loss_cls", "absent"))
    img = cv2.imread(out)
    assert img is not None and img.shape == (400, 700, 3)
    _write_metrics(p, [{"iteration": 5, "bbox/AP": 3.0}])
    with pytest.raises(ValueError, match="no training rows"):
        plot_loss_curve(str(p), str(tmp_path / "curve2.png"))


class _FakePredictor:
    """Two detections on a 128x192 image: class 1 at score 0.9 (drawn), class 0 at score 0.1 (below threshold)."""

    def __call__(self, bgr):
        h, w = bgr.shape[:2]
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor([[10.0, 70.0, 40.0, 110.0], [130.0, 10.0, 180.0, 50.0]]))
        inst.scores = torch.tensor([0.9, 0.1])
        inst.pred_classes = torch.tensor([1, 0])
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 70:110, 10:40] = True
        masks[1, 10:50, 130:180] = True
        inst.pred_masks = masks
        return {"instances": inst}


def test_prediction_grid_draws_ground_truth_beside_thresholded_predictions(tmp_path):
    img = np.full((128, 192, 3), 128, np.uint8)
    files = []
    for i in range(2):
        f = tmp_path / f"im{i}.png"
        cv2.imwrite(str(f), img)
        files.append(str(f))
    records = [{"file_name": f, "height": 128, "width": 192, "image_id": i,
                "annotations": [{"bbox": [10, 70, 30, 40], "bbox_mode": 1, "category_id": 1,
                                 "segmentation": [[10, 70, 40, 70, 40, 110, 10, 110]]}]}
               for i, f in enumerate(files)]
    meta = Metadata(name="fake", thing_classes=["dent", "crack"])
    out = prediction_grid(_FakePredictor(), records, meta, str(tmp_path / "grid.png"), score_threshold=0.5)
    grid = cv2.imread(out)
    strip, gap, pad = 18, 6, 4
    assert grid.shape == (2 * (strip + 128 + pad), 2 * 192 + gap, 3)
    pred = grid[strip:strip + 128, 192 + gap:]
    # the kept detection is painted over its mask, the one below the threshold is not
    assert np.abs(pred[95:105, 15:35].astype(int) - 128).max() > 20
    assert np.abs(pred[15:45, 135:175].astype(int) - 128).max() <= 2
    gt = grid[strip:strip + 128, :192]
    assert np.abs(gt[95:105, 15:35].astype(int) - 128).max() > 20
    assert np.abs(gt[15:45, 135:175].astype(int) - 128).max() <= 2
    with pytest.raises(ValueError, match="no records"):
        prediction_grid(_FakePredictor(), [], meta, str(tmp_path / "empty.png"))
