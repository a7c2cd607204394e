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
