"""tools/demo.py end to end with a random-init tiny Mask R-CNN on CPU: images, a folder with bad files, a video."""
import importlib.util
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "assessment"))
from assessment_helpers import PARTS, TINY_DETECTOR_OVERRIDES, rgb_image, save, save_detector_checkpoint  # noqa: E402


def _demo():
    spec = importlib.util.spec_from_file_location("tool_demo", os.path.join(REPO, "tools", "demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tiny(tiny_cfg, tmp_path):
    """(config file, random-init checkpoint with CarDD's names, one with a parts model's names)."""
    from cardd_d2.data.categories import CARDD_CLASS_NAMES

    cfg = tiny_cfg("CarDD/mask_rcnn_R_50_FPN.yaml", *TINY_DETECTOR_OVERRIDES)
    path = tmp_path / "tiny.yaml"
    path.write_text(cfg.dump())
    return (str(path), save_detector_checkpoint(cfg, str(tmp_path / "cardd.pth"), CARDD_CLASS_NAMES),
            save_detector_checkpoint(cfg, str(tmp_path / "parts.pth"), PARTS))


def _video(path, n=3, h=48, w=64):
    import cv2

    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (w, h))
    assert vw.isOpened()
    for k in range(n):
        vw.write(rgb_image(h, w, seed=k))
    vw.release()
    return path


def test_demo_folder_with_bad_files_and_video(tiny, tmp_path, capsys):
    config_file, weights, _ = tiny
    src = tmp_path / "in"
    save(rgb_image(56, 72, seed=1), str(src / "x" / "car.jpg"))
    save(rgb_image(40, 40, seed=2)[:, :, 0], str(src / "y" / "car.png"))  # duplicate stem, grayscale
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (src / "notes.txt").write_text("hello")
    video = _video(str(tmp_path / "clip.avi"))
    out = tmp_path / "out"
    rc = _demo().main(["--config-file", config_file, "--weights", weights, "--input", str(src), video, "--output",
                       str(out), "--confidence-threshold", "0.0", "--no-progress", "--polygons"])
    assert rc == 1  # broken.jpg failed, everything else was processed
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "3 processed" in captured.out
    files = set(os.listdir(out))
    assert {"x__car.jpg", "x__car.json", "y__car.jpg", "y__car.json", "clip.mp4", "clip.json"} <= files
    rec = json.load(open(out / "x__car.json"))
    assert (rec["width"], rec["height"]) == (72, 56)
    assert 1 <= len(rec["instances"]) <= 3
    d = rec["instances"][0]
    assert set(d) >= {"class", "class_id", "score", "bbox", "mask", "polygon", "area_px", "area_pct", "size_bucket"}
    assert d["class"] in ("dent", "scratch", "crack", "glass shatter", "lamp broken", "tire flat")
    assert any("grayscale" in w for w in json.load(open(out / "y__car.json"))["warnings"])
    from PIL import Image

    assert Image.open(out / "x__car.jpg").size == (72, 56)
    vid = json.load(open(out / "clip.json"))
    assert [f["frame"] for f in vid["frames"]] == [0, 1, 2]
    import cv2

    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_demo_single_image_and_glob(tiny, tmp_path):
    config_file, weights, _ = tiny
    save(rgb_image(seed=3), str(tmp_path / "a1.jpg"))
    save(rgb_image(seed=4), str(tmp_path / "a2.jpg"))
    out = tmp_path / "o"
    rc = _demo().main(["--config-file", config_file, "--input", str(tmp_path / "a*.jpg"), "--output", str(out),
                       "--no-progress", "MODEL.WEIGHTS", weights])
    assert rc == 0
    assert sorted(f for f in os.listdir(out) if f.endswith(".json")) == ["a1.json", "a2.json"]
    for f in ("a1.json", "a2.json"):
        # default --confidence-threshold 0.5 applies to the JSON too
        assert all(d["score"] >= 0.5 for d in json.load(open(out / f))["instances"])


def test_demo_labels_with_the_checkpoints_class_names(tiny, tmp_path, capsys):
    config_file, _, parts = tiny
    save(rgb_image(seed=5), str(tmp_path / "car.jpg"))
    out = tmp_path / "o"
    args = ["--config-file", config_file, "--input", str(tmp_path / "car.jpg"), "--output", str(out), "--no-progress",
            "--confidence-threshold", "0.0"]
    assert _demo().main(args + ["--weights", parts]) == 0
    found = {d["class"] for d in json.load(open(out / "car.json"))["instances"]}
    assert found and found <= set(PARTS)
    assert _demo().main(args) == 2  # no weights
    assert "--weights" in capsys.readouterr().err
