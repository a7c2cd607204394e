"""--num-gpus rule: the recipe's batch must split evenly over the processes, or REFERENCE_WORLD_SIZE scales it;
checked before any process starts (no 8-process launch needed to test it)."""
import os
import re
import subprocess
import sys

import pytest
from detectron2.engine import DefaultTrainer

from cardd_d2.engine import setup_cfg
from cardd_d2.engine.world_size import check_world_size
from tiny_config import REPO_ROOT, config_path

PAPER = sorted(f[:-5] for f in os.listdir(config_path("CarDD")) if f.endswith(".yaml"))


def _readme_train_commands():
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    return re.findall(r"tools/train_net\.py --config-file (\S+\.yaml) --num-gpus (\d+)([^\n]*)", text)


def test_readme_multi_gpu_examples_pass_the_check():
    commands = _readme_train_commands()
    assert any(int(n) > 1 for _, n, _ in commands)
    for config, n, rest in commands:
        opts = rest.split()
        check_world_size(setup_cfg(os.path.join(REPO_ROOT, config), opts), int(n))


@pytest.mark.parametrize("name", PAPER)
def test_every_paper_config_fits_8_processes_with_the_documented_scaling(name):
    cfg = setup_cfg(config_path(f"CarDD/{name}.yaml"))
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 0  # the recipe is not rescaled unless asked
    check_world_size(cfg, 1)
    scaled = setup_cfg(config_path(f"CarDD/{name}.yaml"), ["SOLVER.REFERENCE_WORLD_SIZE", "1"])
    check_world_size(scaled, 8)
    s8 = DefaultTrainer.auto_scale_workers(scaled, 8).SOLVER
    assert s8.IMS_PER_BATCH == 8 * cfg.SOLVER.IMS_PER_BATCH and s8.BASE_LR == pytest.approx(8 * cfg.SOLVER.BASE_LR)


def test_batch_that_does_not_split_names_what_to_set():
    cfg = setup_cfg(config_path("CarDD/dcn_plus_R_101_FPN.yaml"))
    for n in (1, 2, 4):
        check_world_size(cfg, n)
    with pytest.raises(ValueError) as e:
        check_world_size(cfg, 8)
    msg = str(e.value)
    assert "SOLVER.IMS_PER_BATCH 4" in msg and "8 processes" in msg and "(1, 2, 4:" in msg
    assert "'SOLVER.REFERENCE_WORLD_SIZE 1'" in msg and "IMS_PER_BATCH 32, BASE_LR 0.04, MAX_ITER 2112" in msg
    bad_ref = setup_cfg(config_path("CarDD/dcn_plus_R_101_FPN.yaml"), ["SOLVER.REFERENCE_WORLD_SIZE", "3"])
    with pytest.raises(ValueError, match="REFERENCE_WORLD_SIZE 3 does not divide SOLVER.IMS_PER_BATCH 4"):
        check_world_size(bad_ref, 3)


def test_train_net_stops_before_launching(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file",
         config_path("CarDD/htc_R_50_FPN.yaml"), "--num-gpus", "8", "OUTPUT_DIR", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "SOLVER.IMS_PER_BATCH 2" in proc.stderr and "(1, 2:" in proc.stderr
    assert not out.exists()  # nothing started: no output folder, no log
