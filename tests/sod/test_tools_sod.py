"""SOD command-line tools: coco_to_sod, test_sod, instances_to_saliency, sod_classwise (tiny, CPU)."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join("tools", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    from cardd_d2.data.synthetic import make_synthetic_cardd
    return make_synthetic_cardd(str(tmp_path_factory.mktemp("sod_tools_syn")), num_images=(6, 3, 3),
                                image_size=(160, 120), seed=3)


def test_coco_to_sod_cli(syn, tmp_path):
    from cardd_sod.data import read_sod_split
    out = str(tmp_path / "sod")
    res = _tool("coco_to_sod").main(["--coco-root", syn["coco_root"], "--output", out, "--image-mode", "symlink"])
    assert {k: v["num_images"] for k, v in res.items()} == {"TR": 6, "VAL": 3, "TE": 3}
    assert len(read_sod_split(out, "TE")) == 3
    cw = _tool("coco_to_sod").main(["--json", syn["json"]["test"], "--image-dir", syn["image_dirs"]["test"],
                                    "--split", "test", "--output", str(tmp_path / "cw"), "--classwise", "--no-edges"])
    assert set(cw) == {"dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat"}
    assert sum(v["num_images"] for v in cw.values()) >= 3
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        _tool("coco_to_sod").main(["--coco-root", str(tmp_path), "--output", str(tmp_path / "x")])


def test_test_sod_cli_writes_json_and_table(syn, tmp_path):
    gt = os.path.join(syn["sod_root"], "CarDD-TE", "CarDD-TE-Mask")
    rows = _tool("test_sod").main(["--pred", f"GT-copy={gt}", "--gt-dir", gt, "--output", str(tmp_path)])
    r = rows["GT-copy"]
    assert r["MAE"] == 0 and r["S_m"] == pytest.approx(1.0, abs=1e-6) and r["F_beta"] == pytest.approx(1.0)
    with open(tmp_path / "sod_metrics.json") as f:
        assert json.load(f)["GT-copy"]["num_images"] == 3
    assert "| GT-copy | 1.000 |" in (tmp_path / "sod_metrics.md").read_text()


def _fake_instance_results(json_path, path, junk=True):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    coco = COCO(json_path)
    out = []
    for ann in coco.loadAnns(coco.getAnnIds()):
        rle = mask_utils.encode(np.asfortranarray(coco.annToMask(ann)))
        rle["counts"] = rle["counts"].decode("ascii")  # as detectron2 writes it
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 0.9,
                    "segmentation": rle})
    if junk:  # below the 0.5 threshold: must not appear in the maps
        for img in coco.dataset["images"]:
            full = np.ones((img["height"], img["width"]), np.uint8)
            rle = mask_utils.encode(np.asfortranarray(full))
            rle["counts"] = rle["counts"].decode("ascii")
            out.append({"image_id": img["id"], "category_id": 1, "score": 0.5, "segmentation": rle})
    with open(path, "w") as f:
        json.dump(out, f)
    return path


def test_instances_to_saliency_and_grid(syn, tmp_path):
    gt_json, img_dir = syn["json"]["test"], syn["image_dirs"]["test"]
    perfect = _fake_instance_results(gt_json, str(tmp_path / "perfect.json"))
    empty = str(tmp_path / "empty.json")
    with open(empty, "w") as f:
        json.dump([], f)
    sod_gt = os.path.join(syn["sod_root"], "CarDD-TE", "CarDD-TE-Mask")
    out = str(tmp_path / "cmp")
    res = _tool("instances_to_saliency").main(["--gt-json", gt_json, "--image-dir", img_dir, "--instances",
                                               f"DCN+={perfect}", "--instances", f"none={empty}", "--saliency",
                                               f"SOD-GT={sod_gt}", "--output", out])
    m = res["metrics"]
    assert m["DCN+"]["MAE"] == 0 and m["SOD-GT"]["MAE"] == 0 and m["none"]["MAE"] > 0
    for f in os.listdir(sod_gt):  # union of instances with score > 0.5 == the SOD GT mask
        a = cv2.imread(os.path.join(out, "DCN+", f), 0)
        assert np.array_equal(a, cv2.imread(os.path.join(sod_gt, f), 0)), f
        assert not cv2.imread(os.path.join(out, "none", f), 0).any()
    grid = cv2.imread(res["grid"])
    assert grid is not None and grid.shape[0] > 3 * 160 and grid.shape[1] > 5 * 160 * 160 / 120
    assert "DCN+" in open(os.path.join(out, "comparison.md")).read()
    with open(empty, "w") as f:
        json.dump([{"image_id": 987654, "score": 0.9, "segmentation": []}], f)
    with pytest.raises(ValueError, match="987654"):
        _tool("instances_to_saliency").main(["--gt-json", gt_json, "--image-dir", img_dir, "--instances",
                                             f"bad={empty}", "--output", str(tmp_path / "bad")])


def test_sod_classwise_cli_tiny(syn, tmp_path):
    work = str(tmp_path / "cw")
    res = _tool("sod_classwise").main([
        "--model", "tiny", "--config-file", "configs/SOD/csnet.yaml", "--coco-root", syn["root"], "--classes",
        "glass shatter", "tire flat", "dent", "--output", work, "--no-progress",
        "MODEL.DEVICE", "cpu", "DATA.NUM_WORKERS", "0", "INPUT.SIZE", "[32, 32]", "SOLVER.EPOCHS", "1",
        "SOLVER.BATCH_SIZE", "4"])
    # this synthetic set (seed 3) has glass shatter / tire flat in train and test, and no dent at all
    assert set(res["results"]) == {"glass shatter", "tire flat"} and set(res["skipped"]) == {"dent"}
    for cls, r in res["results"].items():
        assert 0 <= r["MAE"] <= 1 and r["num_test_images"] >= 1
        assert f"| {cls} |" in res["table"]
    assert os.path.isfile(os.path.join(work, "classwise_results.md"))
    with open(os.path.join(work, "classwise_results.json")) as f:
        saved = json.load(f)
    assert saved["model"] == "tiny" and saved["train_set"] == "all"


TOOLS = ("train_sod", "test_sod", "sod_classwise", "coco_to_sod", "instances_to_saliency")


@pytest.mark.parametrize("name", TOOLS)
def test_tools_speak_one_dialect(name, capsys):
    """--config-file / --output / trailing KEY VALUE, exit codes in --help, no sys.path edits."""
    src = open(os.path.join("tools", name + ".py")).read()
    assert "sys.path.insert" not in src and '"--config"' not in src and '"--out"' not in src
    with pytest.raises(SystemExit) as e:
        _tool(name).main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--output" in text and "Exit codes: 0 ok, 1 " in text and "2 usage error" in text
    if name in ("train_sod", "test_sod", "sod_classwise"):
        assert "--config-file" in text and "KEY VALUE" in text


def test_bad_name_path_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _tool("test_sod").main(["--pred", "no-equals-sign", "--gt-dir", str(tmp_path)])
    assert e.value.code == 2 and "NAME=PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _tool("test_sod").main(["--pred-dir", str(tmp_path), "--gt-dir", str(tmp_path), "SOLVER.EPOCHS", "1"])
    assert e.value.code == 2
