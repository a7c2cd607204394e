import hashlib
import json
import os

import numpy as np
import pytest
import torch
from assessment_helpers import PARTS, constant_gate

from cardd_d2.assessment.images import load_image
from cardd_d2.assessment.challenging import (
    PAPER_TABLE_VI_COUNTS,
    build_extended_test_set,
    register_coco_dataset,
    run_challenging_setting,
)


def _same(a, b):
    """Equal result dicts, NaN == NaN."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return (a != a and b != b) or a == b


def _digest(bgr):
    return hashlib.md5(np.ascontiguousarray(bgr).tobytes()).hexdigest()


class _Oracle:
    """Predictor returning the ground truth (score 0.9) on damaged images and one detection per class (score 1.0)
    on undamaged ones; plus a gate that knows which is which. Keyed by image content."""

    def __init__(self, dataset_name):
        from detectron2.data import DatasetCatalog

        self.by_digest = {}
        for d in DatasetCatalog.get(dataset_name):
            self.by_digest[_digest(load_image(d["file_name"]).bgr)] = d
        self.discard_threshold = 0.9

    def __call__(self, bgr):
        from detectron2.structures import BoxMode, Boxes, Instances
        from pycocotools import mask as mask_util

        d = self.by_digest[_digest(bgr)]
        h, w = bgr.shape[:2]
        boxes, classes, masks, scores = [], [], [], []
        for a in d["annotations"]:
            boxes.append(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS))
            classes.append(a["category_id"])
            rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))
            masks.append(mask_util.decode(rle).astype(bool))
            scores.append(0.9)
        if not d["annotations"]:
            for c in range(6):
                boxes.append([4.0 * c, 4.0 * c, 4.0 * c + 60, 4.0 * c + 60])
                m = np.zeros((h, w), bool)
                m[4 * c:4 * c + 60, 4 * c:4 * c + 60] = True
                masks.append(m)
                classes.append(c)
                scores.append(1.0)
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inst.scores = torch.tensor(scores)
        inst.pred_masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        return {"instances": inst}

    # gate interface
    def damaged_proba(self, images):
        return np.array([0.99 if self.by_digest[_digest(b)]["annotations"] else 0.01 for b in images])

    def discard(self, p):
        return 1 - p > self.discard_threshold

    def describe(self):
        return {"weights": "oracle", "discard_threshold": self.discard_threshold}


def test_undamaged_false_positives_cost_ap_unless_the_gate_drops_them(extended):
    _, ext_name, dmg_name = extended
    oracle = _Oracle(ext_name)
    res = run_challenging_setting(oracle, oracle, ext_name, damaged_dataset=dmg_name, progress=False)
    r = res["results"]
    for task in ("bbox", "segm"):
        assert r["damaged_only"][task]["AP"] == pytest.approx(100.0)
        assert r["gated"][task]["AP"] == pytest.approx(100.0)  # undamaged images discarded: no false positives
        assert r["ungated"][task]["AP"] < 90.0  # confident false positives on every undamaged image
    c = res["counts"]
    assert c["undamaged_discarded"] == c["num_undamaged"] and c["damaged_discarded"] == 0


@pytest.fixture
def extended(synthetic_cardd, tmp_path):
    s = synthetic_cardd
    ext = build_extended_test_set(s["json"]["test"], s["image_dirs"]["test"], s["undamaged_dir"],
                                  str(tmp_path / "extended.json"))
    ext_name = register_coco_dataset("test_cardd_challenging_ext", ext["json"], s["image_dirs"]["test"])
    dmg_name = register_coco_dataset("test_cardd_challenging_dmg", s["json"]["test"], s["image_dirs"]["test"])
    return ext, ext_name, dmg_name


def test_extended_test_set_json(synthetic_cardd, extended):
    ext, ext_name, _ = extended
    with open(synthetic_cardd["json"]["test"]) as f:
        orig = json.load(f)
    with open(ext["json"]) as f:
        data = json.load(f)
    n_und = len(os.listdir(synthetic_cardd["undamaged_dir"]))
    assert ext["num_damaged"] == len(orig["images"]) and ext["num_undamaged"] == n_und
    assert data["annotations"] == orig["annotations"] and data["categories"] == orig["categories"]
    ids = [im["id"] for im in data["images"]]
    assert len(set(ids)) == len(ids) == len(orig["images"]) + n_und
    und = [im for im in data["images"] if im.get("undamaged")]
    assert len(und) == n_und and not any(a["image_id"] in ext["undamaged_ids"] for a in data["annotations"])
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get(ext_name)
    assert len(dicts) == len(ids) and all(os.path.isfile(d["file_name"]) for d in dicts)


def test_gate_discarding_everything_vs_nothing(extended, tiny_predictor, tmp_path):
    ext, ext_name, dmg_name = extended
    n_d, n_u = ext["num_damaged"], ext["num_undamaged"]
    # P(damaged) = 0.01 for every image: all discarded, so the gated row has no detections at all.
    res = run_challenging_setting(tiny_predictor, constant_gate(0.01), ext_name, damaged_dataset=dmg_name,
                                  output_dir=str(tmp_path / "all"), tasks=("bbox", "segm"), progress=False)
    c = res["counts"]
    assert (c["num_damaged"], c["num_undamaged"]) == (n_d, n_u)
    assert c["undamaged_discarded"] == n_u and c["damaged_discarded"] == n_d and c["undamaged_kept"] == 0
    assert res["results"]["gated"]["bbox"]["AP"] == 0.0 and set(res["results"]) == {"gated", "ungated",
                                                                                   "damaged_only"}
    table = open(tmp_path / "all" / "table_vi.md").read()
    assert f"| undamaged images discarded by the classifier | {n_u} | {PAPER_TABLE_VI_COUNTS['undamaged_discarded']} |" \
        in table
    assert "AP values are ours" in table and "spec" not in table
    # P(damaged) = 0.5: nothing discarded, so gated == ungated; the random detector fires on undamaged images.
    res2 = run_challenging_setting(tiny_predictor, constant_gate(0.5), ext_name, damaged_dataset=dmg_name,
                                   tasks=("bbox", "segm"), progress=False)
    c2 = res2["counts"]
    assert c2["undamaged_discarded"] == 0 and c2["undamaged_kept"] == n_u
    assert c2["undamaged_kept_with_detections"] == n_u  # score threshold 0, 3 detections per image
    assert _same(res2["results"]["gated"], res2["results"]["ungated"])
    assert _same(res2["results"]["ungated"], res["results"]["ungated"])  # the detector is the same in both runs


def test_tool_end_to_end(synthetic_cardd, tiny_config_file, save_tiny_weights, tiny_weights, tmp_path, capsys):
    import importlib.util

    from cardd_d2.assessment.classifier import save_checkpoint

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("tool_challenging", os.path.join(repo, "tools",
                                                                                   "challenging_setting.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ckpt = save_checkpoint(str(tmp_path / "gate.pth"), constant_gate(0.02).model, "tiny", 32, 0)
    s = synthetic_cardd
    out = str(tmp_path / "out")
    args = ["--config-file", tiny_config_file, "--classifier-weights", ckpt, "--test-json", s["json"]["test"],
            "--image-root", s["image_dirs"]["test"], "--undamaged-dir", s["undamaged_dir"],
            "--max-undamaged", "2", "--no-compare", "--no-progress", "--output", out]
    # a model whose class names are not the test json's is refused before any inference, naming both
    parts = save_tiny_weights(PARTS, "parts.pth")
    assert tool.main(args + ["--weights", parts]) == 2
    err = capsys.readouterr().err
    assert parts in err and s["json"]["test"] in err and "door" in err and "scratch" in err
    assert not os.path.exists(os.path.join(out, "challenging_results.json"))
    rc = tool.main(args + ["MODEL.WEIGHTS", tiny_weights])  # weights as a trailing config override
    assert rc == 0
    printed = capsys.readouterr().out
    assert "undamaged images discarded: 2 / 2" in printed and "Table VI" in printed
    res = json.load(open(os.path.join(out, "challenging_results.json")))
    assert set(res["results"]) == {"gated"} and res["gate"]["discard_threshold"] == 0.9
    assert os.path.isfile(os.path.join(out, "extended_test.json"))
