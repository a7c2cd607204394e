"""README "Using your own data" end to end, tiny: a generated COCO set with 4 own classes and ids from 0, declared in
a YAML config, trained and evaluated by tools/train_net.py, then an assessment report by ``cardd assess``."""
import json
import os
import subprocess
import sys

from cardd_d2.checkpoint.class_names import read_checkpoint_info
from cardd_d2.data.synthetic import make_synthetic_coco
from tiny_config import REPO_ROOT, TINY_OVERRIDES, config_path

NAMES = ["dent", "scuff", "crack", "broken glass"]


def _run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("CARDD_DATASETS", None)
    return subprocess.run([sys.executable] + cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_own_coco_data_from_config_to_report(tmp_path):
    data = make_synthetic_coco(str(tmp_path / "datasets" / "parts"), NAMES, num_images=(4, 1, 2),
                               image_size=(128, 96), seed=1, first_id=0)
    assert json.load(open(data["json"]["train"]))["annotations"][0]["id"] == 0
    base = config_path("CarDD/quickstart/mask_rcnn_R_50_narrow_FPN_scratch.yaml")
    # the README's config, with paths relative to the working directory
    (tmp_path / "parts.yaml").write_text(
        f'_BASE_: "{base}"\n'
        "DATASETS:\n"
        '  REGISTER_COCO: [["parts_train", "datasets/parts/annotations/train.json", "datasets/parts/images/train"],\n'
        '                  ["parts_test", "datasets/parts/annotations/test.json", "datasets/parts/images/test"]]\n'
        '  TRAIN: ("parts_train",)\n'
        '  TEST: ("parts_test",)\n'
        "OUTPUT_DIR: output/parts\n"
    )
    train_net = os.path.join(REPO_ROOT, "tools", "train_net.py")
    tiny = TINY_OVERRIDES + ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)"]
    proc = _run([train_net, "--config-file", "parts.yaml"] + tiny, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = tmp_path / "output" / "parts"
    assert "NUM_CLASSES: 4" in (out / "config.yaml").read_text()  # taken from the data
    assert read_checkpoint_info(str(out / "model_final.pth")).thing_classes == NAMES
    results = json.load(open(out / "inference" / "parts_test" / "results.json"))
    assert {f"AP-{n}" for n in NAMES} <= set(results["segm"])

    proc = _run(["-m", "cardd_cli", "assess", "--config-file", str(out / "config.yaml"), "--weights",
                 str(out / "model_final.pth"), "datasets/parts/images/test", "--output", "output/parts/report",
                 "--confidence-threshold", "0.0", "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.load(open(out / "report" / "report.json"))
    assert report["summary"]["num_ok"] == 2
    assert set(report["summary"]["instances_per_class"]) <= set(NAMES)

    # a class count the user sets that the data contradicts fails before training, naming the key
    proc = _run([train_net, "--config-file", "parts.yaml"] + tiny
                + ["MODEL.ROI_HEADS.NUM_CLASSES", "6", "OUTPUT_DIR", "output/wrong"], tmp_path)
    assert proc.returncode == 1 and "set MODEL.ROI_HEADS.NUM_CLASSES 4" in proc.stderr
    assert not (tmp_path / "output" / "wrong").exists()
