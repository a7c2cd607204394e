"""projects/CarDD_paper/run_table.py: experiment lists, dry runs, and Table II end-to-end on synthetic data."""
import importlib.util
import json
import os
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(REPO, "projects", "CarDD_paper", "run_table.py")

# Tiny, narrow models (ResNet-50 layout at 1/4 width, DCN kept on) that train 2 iterations in seconds on CPU.
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "50",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "16",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "8", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "TEST.DETECTIONS_PER_IMAGE", "20",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192", "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "192", "INPUT.RANGE_RESIZE.WIDTH", "192", "INPUT.RANGE_RESIZE.HEIGHT_RANGE", "(96, 160)",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS", "0", "DATASETS.CHECK_IMAGES", "False",
    "SEED", "0",
]


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("cardd_run_table", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_experiment_lists(runner):
    assert [e.config for e in runner.EXPERIMENTS["II"]] == [
        "ablation/dcn_R_101_baseline.yaml", "ablation/dcn_R_101_multiscale.yaml", "ablation/dcn_R_101_focal.yaml",
        "ablation/dcn_R_101_multiscale_focal.yaml"]
    grid = [(float(e.opts[1]), float(e.opts[3])) for e in runner.EXPERIMENTS["III"]]
    assert grid == [(0.25, 1), (0.25, 2), (0.25, 3), (0.25, 5), (0.5, 1), (0.5, 2), (0.5, 3), (0.75, 0.5),
                    (0.75, 1), (0.75, 2)]
    assert all(e.config == "dcn_plus_R_101_FPN.yaml" for e in runner.EXPERIMENTS["III"])
    main = runner.EXPERIMENTS["IV"]
    assert runner.EXPERIMENTS["V"] is main and len(main) == 12
    assert {e.config for e in main} == {f"{m}_R_{d}_FPN.yaml" for m in
                                        ("mask_rcnn", "cascade_mask_rcnn", "gcnet", "htc", "dcn", "dcn_plus")
                                        for d in ("50", "101")}
    from cardd_d2.evaluation import PAPER_RESULTS

    assert all(e.paper_key in PAPER_RESULTS for e in main)


@pytest.mark.parametrize("table,count", [("II", 4), ("III", 10), ("IV", 12), ("V", 12)])
def test_dry_run_prints_one_train_net_command_per_experiment(runner, table, count, tmp_path, capsys):
    assert runner.main(["--table", table, "SEED", "3", "--dry-run", "--output", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "train_net.py" in ln]
    assert len(lines) == count
    for ln in lines:
        assert "--config-file" in ln and "SEED 3 OUTPUT_DIR " + str(tmp_path) in ln
    assert not os.listdir(tmp_path)  # nothing run, nothing written


def test_table_vi_needs_its_inputs(runner, tmp_path):
    with pytest.raises(SystemExit, match="undamaged-dir"):
        runner.main(["--table", "VI", "--output", str(tmp_path), "--cardd-root", str(tmp_path)])


def test_bad_arguments(runner, tmp_path):
    with pytest.raises(SystemExit, match="unknown experiment"):
        runner.main(["--table", "II", "--only", "nope", "--output", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        runner.main(["--table", "II", "--dry-run", "--output", str(tmp_path), "SEED"])
    assert e.value.code == 2


def test_table_vi_passes_overrides_as_trailing_pairs(runner, tmp_path, capsys):
    # tools/challenging_setting.py takes config overrides as trailing KEY VALUE pairs (no --opts flag)
    assert runner.main(["--table", "VI", "--dry-run", "--output", str(tmp_path), "--cardd-root", str(tmp_path),
                        "--undamaged-dir", str(tmp_path), "MODEL.DEVICE", "cpu"]) == 0
    cmd = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert "challenging_setting.py" in cmd[1] and "--opts" not in cmd and cmd[-2:] == ["MODEL.DEVICE", "cpu"]


def test_table_ii_end_to_end_on_synthetic_data(runner, synthetic_cardd, tmp_path, capsys):
    out = tmp_path / "paper"
    argv = ["--table", "II", "--output", str(out), "--cardd-root", synthetic_cardd["root"], "--resume", "--jobs", "2"] + TINY
    assert runner.main(argv) == 0
    printed = capsys.readouterr().out
    expected = {  # experiment -> (ROI heads, loss, range resize), read back from each run's saved config
        "baseline": ("CarDDStandardROIHeads", "ce", False),
        "multiscale": ("CarDDStandardROIHeads", "ce", True),
        "focal": ("CarDDStandardROIHeads", "focal", False),
        "multiscale_focal": ("CarDDStandardROIHeads", "focal", True),
    }
    for name, (heads, loss, ms) in expected.items():
        run_dir = out / "table_II" / name
        res = json.loads((run_dir / "inference" / "cardd_test" / "results.json").read_text())
        assert {"segm", "bbox"} <= set(res) and "AP" in res["segm"] and "AP-dent" in res["bbox"]
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["MODEL"]["ROI_HEADS"]["NAME"] == heads
        assert cfg["MODEL"]["ROI_BOX_HEAD"]["CLS_LOSS_TYPE"] == loss
        assert cfg["INPUT"]["RANGE_RESIZE"]["ENABLED"] is ms
        assert cfg["MODEL"]["RESNETS"]["DEFORM_ON_PER_STAGE"] == [True] * 4
        assert cfg["SOLVER"]["MAX_ITER"] == 2
    table = (out / "table_II.md").read_text()
    assert table in printed
    for label in ("DCN R-101 (baseline)", "+ multi-scale", "+ focal loss", "+ multi-scale + focal loss (DCN+)"):
        assert f"| {label} |" in table
    assert "| + multi-scale + focal loss (DCN+) (paper) | 57.0 |" in table
    assert "No results yet" not in table

    # --resume: everything is finished, so nothing runs again
    assert runner.main(argv) == 0
    assert capsys.readouterr().out.count("skipped") == 4
