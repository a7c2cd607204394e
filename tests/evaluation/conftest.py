"""Fixtures of the evaluation tests (data built by eval_synth, nothing read from elsewhere)."""
import json

import pytest

from eval_synth import make_gt, make_predictions, pycocotools_stats


@pytest.fixture(scope="session")
def synth_gt():
    return make_gt()


@pytest.fixture(scope="session")
def synth_preds(synth_gt):
    return make_predictions(synth_gt)


@pytest.fixture()
def synth_files(tmp_path, synth_gt, synth_preds):
    gt_path = tmp_path / "gt.json"
    pred_path = tmp_path / "preds.json"
    gt_path.write_text(json.dumps(synth_gt))
    pred_path.write_text(json.dumps(synth_preds))
    return {"gt": str(gt_path), "preds": str(pred_path)}


@pytest.fixture(scope="session")
def reference_stats():
    return pycocotools_stats
