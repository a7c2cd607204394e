"""tools/quickstart.py (the README's main job) end to end with tiny settings."""
import importlib.util
import json
import os

from tiny_config import REPO_ROOT, TINY_OVERRIDES


def _load_tool():
    spec = importlib.util.spec_from_file_location("quickstart_tool", os.path.join(REPO_ROOT, "tools", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_generates_trains_evaluates_and_summarises(tmp_path, monkeypatch):
    monkeypatch.delenv("CARDD_DATASETS", raising=False)
    tool = _load_tool()
    data, out = tmp_path / "data", tmp_path / "out"
    opts = [o for o in TINY_OVERRIDES]
    summary = tool.main(["--iters", "4", "--data", str(data), "--splits", "6", "2", "3", "--output", str(out)] + opts)
    assert os.path.isfile(data / "CarDD_COCO" / "annotations" / "instances_test2017.json")
    saved = json.load(open(out / "quickstart_summary.json"))
    assert saved == summary
    assert saved["model"] == "dcn_plus" and saved["iterations"] == 4
    for key in ("segm_AP", "bbox_AP", "segm_AP50", "bbox_AP50"):
        assert 0.0 <= saved[key] <= 100.0
    assert os.path.isfile(os.path.join(saved["results_dir"], "results.md"))
    # the pictures a person checks at a glance: one row per test image (3 here), ground truth | predictions
    import cv2

    grid = cv2.imread(saved["predictions_png"])
    assert saved["predictions_png"] == str(out / "predictions.png") and grid is not None
    assert grid.shape[0] > 3 * 192 and grid.shape[1] > 2 * 256
    assert cv2.imread(saved["loss_curve_png"]) is not None
    cfg_text = open(out / "config.yaml").read()
    assert 'NAME: CarDDStandardROIHeads' in cfg_text and "CLS_LOSS_TYPE: focal" in cfg_text
    # --iters scales the config's LR steps (260, 320 of 350) to the shorter run
    assert "- 3\n" in cfg_text
