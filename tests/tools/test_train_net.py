"""tools/train_net.py end to end: 2-process (gloo) CPU training through detectron2's launch, then --eval-only."""
import json
import os
import subprocess
import sys

from tiny_config import REPO_ROOT, TINY_OVERRIDES, config_path

QUICK = config_path("CarDD/quickstart/mask_rcnn_R_50_narrow_FPN_scratch.yaml")


def _run(args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("CARDD_DATASETS", None)
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py")] + args,
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_two_process_gloo_training_then_eval_only(synthetic_cardd, tmp_path):
    out = tmp_path / "run"
    opts = TINY_OVERRIDES + ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "DATASETS.TEST", "('cardd_val',)"]
    proc = _run(["--config-file", QUICK, "--num-gpus", "2", "--dist-url", "auto",
                 "--cardd-root", synthetic_cardd["root"]] + opts)
    log = proc.stdout + proc.stderr
    assert "world size: 2" in log.lower()
    assert os.path.isfile(out / "log.txt.rank1")  # the second process ran and logged
    assert os.path.isfile(out / "model_final.pth")
    results = json.load(open(out / "inference" / "cardd_val" / "results.json"))
    assert "segm" in json.dumps(results)

    eval_out = tmp_path / "eval"
    _run(["--config-file", QUICK, "--eval-only", "--cardd-root", synthetic_cardd["root"]] + TINY_OVERRIDES
         + ["MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(eval_out),
            "DATASETS.TEST", "('cardd_test',)"])
    assert os.path.isfile(eval_out / "inference" / "cardd_test" / "results.md")


def _train_net_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_net_tool", os.path.join(REPO_ROOT, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_documents_exit_codes_and_overrides(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        _train_net_module().parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "0  finished" in out and "2  usage error" in out
    assert "KEY VALUE pairs" in out


def test_output_flag_sets_output_dir(synthetic_cardd, tmp_path):
    # parse_args checks the configured datasets too: point it at generated data (not at whatever the repo holds)
    args, cfg = _train_net_module().parse_args(["SEED", "1", "--output", str(tmp_path), "--config-file", QUICK,
                                                "--cardd-root", synthetic_cardd["root"]])
    assert cfg.OUTPUT_DIR == str(tmp_path) and cfg.SEED == 1 and args.opts == ["SEED", "1"]


def test_bad_config_or_override_is_a_usage_error(capsys, tmp_path):
    import pytest

    tool = _train_net_module()
    for argv, says in [(["--config-file", str(tmp_path / "nope.yaml")], "nope.yaml"),
                       (["--config-file", QUICK, "SOLVER.NO_SUCH_KEY", "1"], "SOLVER.NO_SUCH_KEY"),
                       (["--config-file", QUICK, "SOLVER.MAX_ITER"], "KEY VALUE pairs")]:
        with pytest.raises(SystemExit) as e:
            tool.parse_args(argv)
        assert e.value.code == 2
        assert says in capsys.readouterr().err


def test_overrides_anywhere_resume_after_overrides_and_clean_log(synthetic_cardd, tmp_path):
    from cardd_d2.checkpoint.class_names import read_checkpoint_info

    out = tmp_path / "dcn_plus"
    dcn_plus = config_path("CarDD/quickstart/dcn_plus_R_50_narrow_FPN_scratch.yaml")
    opts = TINY_OVERRIDES + ["OUTPUT_DIR", str(out), "SOLVER.STEPS", "()", "DATASETS.TEST", "()",
                             "SOLVER.CHECKPOINT_PERIOD", "1"]
    # overrides between the flags
    _run(opts[:6] + ["--config-file", dcn_plus] + opts[6:] + ["SOLVER.MAX_ITER", "2",
                                                              "--cardd-root", synthetic_cardd["root"]])
    log = (out / "log.txt").read_text()
    assert "\x1b[" not in log  # no colour codes in the log file
    assert "INPUT.RANGE_RESIZE is enabled" in log and "INPUT.MIN_SIZE_TRAIN and INPUT.MAX_SIZE_TRAIN are ignored" in log
    assert "Training on 8 images of cardd_train" in log  # cardd's own INFO lines reach log.txt
    assert read_checkpoint_info(str(out / "model_final.pth")).thing_classes is not None

    # --resume after the overrides continues the run instead of being read as an override
    proc = _run(["--config-file", dcn_plus, "--cardd-root", synthetic_cardd["root"]] + opts
                + ["SOLVER.MAX_ITER", "3", "--resume"])
    assert "Resuming data order at sample" in proc.stdout + proc.stderr
    assert "Starting training from iteration 2" in (out / "log.txt").read_text()


def test_eval_only_refuses_a_dataset_with_other_class_names(synthetic_cardd, tiny_cfg, tmp_path):
    import pytest
    import torch

    from cardd_d2.checkpoint.class_names import ClassNamesError
    from cardd_d2.data import register_datasets_for_cfg

    weights = str(tmp_path / "parts.pth")
    parts = ["door", "hood", "front_bumper", "rear_bumper", "fender", "damage"]
    torch.save({"model": {}, "thing_classes": parts}, weights)
    cfg = tiny_cfg(QUICK, "MODEL.WEIGHTS", weights, "DATASETS.TEST", "('cardd_test',)")
    register_datasets_for_cfg(cfg, synthetic_cardd["root"])
    with pytest.raises(ClassNamesError, match=r"checkpoint .*parts.pth has \['door'.*dataset cardd_test has \['dent'"):
        _train_net_module()._check_eval_classes(cfg)
