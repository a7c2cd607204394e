"""CarDDEvaluator inside detectron2's inference_on_dataset, compared with plain pycocotools."""
import copy
import json
import math
import os
import uuid
from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, Instances

from cardd_d2.evaluation import CarDDEvaluator, build_cardd_evaluator, evaluate_coco_json, load_results_json
from eval_synth import IMG_H, IMG_W, jsonable_rle, make_gt, make_predictions, rle_of

CARDD_RNG = [[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]]


def f32_exact(preds):
    """Make boxes and scores exactly representable in float32, so the model-output path loses nothing."""
    out = copy.deepcopy(preds)
    for p in out:
        p["bbox"] = [round(v * 4) / 4 for v in p["bbox"]]
        p["score"] = float(np.float32(p["score"]))
    return out


@pytest.fixture()
def register(tmp_path):
    names = []

    def _register(gt):
        name = f"cardd_eval_test_{uuid.uuid4().hex[:8]}"
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(gt))
        register_coco_instances(name, {}, str(path), str(tmp_path))
        DatasetCatalog.get(name)  # fills thing_classes / thing_dataset_id_to_contiguous_id
        names.append(name)
        return name

    yield _register
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


class FakeModel(torch.nn.Module):
    """Returns prepared detectron2 outputs for each image id."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, inputs):
        return [self.outputs[x["image_id"]] for x in inputs]


def to_model_outputs(gt, preds, dataset_name, with_masks=True):
    to_contig = MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id
    by_img = defaultdict(list)
    for p in preds:
        by_img[p["image_id"]].append(p)
    outputs = {}
    for img in gt["images"]:
        ps = by_img[img["id"]]
        inst = Instances((img["height"], img["width"]))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in ps)]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor([p["score"] for p in ps], dtype=torch.float32)
        inst.pred_classes = torch.tensor([to_contig[p["category_id"]] for p in ps], dtype=torch.int64)
        if with_masks:
            masks = [mask_util.decode(dict(p["segmentation"], counts=p["segmentation"]["counts"].encode())) for p in ps]
            inst.pred_masks = torch.from_numpy(np.array(masks, dtype=bool).reshape(-1, img["height"], img["width"]))
        outputs[img["id"]] = {"instances": inst}
    return outputs


def run(evaluator, gt, outputs):
    loader = [[{"image_id": img["id"], "height": img["height"], "width": img["width"]}] for img in gt["images"]]
    return inference_on_dataset(FakeModel(outputs), loader, evaluator)


def check_against_pycocotools(results, gt, preds, reference_stats):
    for task in ("bbox", "segm"):
        ref = reference_stats(gt, preds, task, area_rng=CARDD_RNG)
        for key, idx in {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}.items():
            want = float("nan") if ref[idx] < 0 else ref[idx] * 100
            got = results[task][key]
            assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-9, (task, key, got, want)
        for cat in gt["categories"]:
            per = reference_stats(gt, preds, task, area_rng=CARDD_RNG, cat_ids=[cat["id"]])
            for key, idx in ((f"AP-{cat['name']}", 0), (f"AP50-{cat['name']}", 1)):
                want = float("nan") if per[idx] < 0 else per[idx] * 100
                got = results[task][key]
                assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-9, (task, key, got, want)


def test_inference_on_dataset_equals_pycocotools(register, tmp_path, synth_gt, synth_preds, reference_stats):
    name = register(synth_gt)
    preds = f32_exact(synth_preds)
    out_dir = tmp_path / "eval"
    ev = CarDDEvaluator(name, output_dir=str(out_dir), distributed=False)
    results = run(ev, synth_gt, to_model_outputs(synth_gt, preds, name))
    check_against_pycocotools(results, synth_gt, preds, reference_stats)
    assert results["segm"]["AP"] > 0 and math.isnan(results["segm"]["AP-tire flat"])
    assert {"coco_APs", "coco_APm", "coco_APl"} <= set(results["bbox"])

    # files: results.json round-trips (NaN as null), results.md has the paper layout
    assert (out_dir / "coco_instances_results.json").exists()
    raw = json.loads((out_dir / "results.json").read_text())
    assert raw["segm"]["AP-tire flat"] is None and raw["meta"]["area_ranges"][1] == [0.0, 16384.0]
    loaded = load_results_json(str(out_dir / "results.json"))
    for task in ("bbox", "segm"):
        assert loaded[task] == pytest.approx(results[task], nan_ok=True)
    md = (out_dir / "results.md").read_text()
    assert "| Method | mask AP | mask AP50 | mask AP75 | mask APS | mask APM | mask APL | box AP |" in md
    assert "mask AP dent | mask AP scratch | mask AP crack | mask AP glass shatter | mask AP lamp broken" in md
    assert f"| ours | {results['segm']['AP']:.1f} | {results['segm']['AP50']:.1f} |" in md


def test_any_class_list_and_noncontiguous_ids(register, reference_stats):
    cats = [{"id": 3, "name": "alpha"}, {"id": 7, "name": "beta"}, {"id": 10, "name": "gamma"}]
    gt = make_gt(seed=5, n_images=6, categories=cats)
    preds = f32_exact(make_predictions(gt, seed=6))
    name = register(gt)
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 10: 2}
    results = run(CarDDEvaluator(name, distributed=False), gt, to_model_outputs(gt, preds, name))
    assert {"AP-alpha", "AP50-beta", "AP-gamma"} <= set(results["segm"])
    check_against_pycocotools(results, gt, preds, reference_stats)


def test_zero_detections(register, tmp_path, synth_gt):
    name = register(synth_gt)
    out_dir = tmp_path / "eval0"
    ev = CarDDEvaluator(name, output_dir=str(out_dir), distributed=False)
    results = run(ev, synth_gt, to_model_outputs(synth_gt, [], name))
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == 0.0 and results[task]["APs"] == 0.0 and results[task]["AP-dent"] == 0.0
        assert math.isnan(results[task]["AP-tire flat"])
    md = (out_dir / "results.md").read_text()
    assert "| ours | 0.0 | 0.0 | 0.0 |" in md and "| - |" in md


def test_missing_masks_is_a_clear_error(register, synth_gt, synth_preds):
    name = register(synth_gt)
    preds = f32_exact(synth_preds)
    outputs = to_model_outputs(synth_gt, preds, name, with_masks=False)
    with pytest.raises(ValueError, match="masks"):
        run(CarDDEvaluator(name, distributed=False), synth_gt, outputs)
    res = run(CarDDEvaluator(name, tasks=("bbox",), distributed=False), synth_gt, outputs)
    assert set(res) == {"bbox"} and res["bbox"]["AP"] > 0


def test_bad_class_and_task(register, synth_gt):
    name = register(synth_gt)
    with pytest.raises(ValueError, match="unknown task"):
        CarDDEvaluator(name, tasks=("bbox", "keypoints"))
    inst = Instances((IMG_H, IMG_W))
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0]]))
    inst.scores = torch.tensor([0.5])
    inst.pred_classes = torch.tensor([9])
    outputs = {img["id"]: {"instances": inst} for img in synth_gt["images"]}
    with pytest.raises(ValueError, match="class 9"):
        run(CarDDEvaluator(name, tasks=("bbox",), distributed=False), synth_gt, outputs)


def test_build_from_config(register, synth_gt, tmp_path):
    from cardd_d2.config import get_cardd_cfg

    name = register(synth_gt)
    cfg = get_cardd_cfg()
    cfg.MODEL.MASK_ON = False
    cfg.TEST.EVALUATOR.REPORT_COCO_SIZES = False
    cfg.TEST.EVALUATOR.METHOD_NAME = "tiny"
    ev = build_cardd_evaluator(cfg, name, output_dir=str(tmp_path / "cfg"), distributed=False)
    res = run(ev, synth_gt, to_model_outputs(synth_gt, [], name, with_masks=False))
    assert set(res) == {"bbox"} and "coco_APs" not in res["bbox"]
    assert "| tiny |" in (tmp_path / "cfg" / "results.md").read_text()


def test_on_registered_synthetic_cardd(synthetic_cardd):
    """Perfect predictions on the project's synthetic CarDD split (registered by cardd_d2.data) give AP 100."""
    from cardd_d2.data import register_coco_damage
    from detectron2.structures import BoxMode

    name = f"cardd_eval_synth_{uuid.uuid4().hex[:8]}"
    register_coco_damage(name, synthetic_cardd["json"]["train"], synthetic_cardd["image_dirs"]["train"])
    try:
        dicts = DatasetCatalog.get(name)
        classes = MetadataCatalog.get(name).thing_classes
        present = {classes[a["category_id"]] for d in dicts for a in d["annotations"]}
        outputs, loader = {}, []
        for d in dicts:
            h, w = d["height"], d["width"]
            anns = d["annotations"]
            inst = Instances((h, w))
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.scores = torch.ones(len(anns))
            inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
            masks = [mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))) for a in anns]
            inst.pred_masks = torch.from_numpy(np.array(masks, dtype=bool).reshape(-1, h, w))
            outputs[d["image_id"]] = {"instances": inst}
            loader.append([{"image_id": d["image_id"], "height": h, "width": w}])
        res = inference_on_dataset(FakeModel(outputs), loader, CarDDEvaluator(name, distributed=False))
        for task in ("bbox", "segm"):
            assert res[task]["AP"] == pytest.approx(100.0)
            for c in classes:
                if c in present:
                    assert res[task][f"AP-{c}"] == pytest.approx(100.0)
                else:
                    assert math.isnan(res[task][f"AP-{c}"])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_dataset_without_json_is_converted(tmp_path):
    """A dicts-only dataset (no json_file, no id map): detectron2 converts it; ids are the contiguous ones."""
    from detectron2.structures import BoxMode

    name = f"cardd_eval_dicts_{uuid.uuid4().hex[:8]}"
    dicts = [
        {"file_name": f"{i}.jpg", "image_id": i, "height": 200, "width": 300,
         "annotations": [{"bbox": [10.0 * i, 20.0, 150.0, 140.0], "bbox_mode": BoxMode.XYXY_ABS,
                          "category_id": i % 2, "iscrowd": 0}]}
        for i in range(1, 4)
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["big dent", "small dent"])
    try:
        outputs = {}
        for d in dicts:
            inst = Instances((200, 300))
            inst.pred_boxes = Boxes(torch.tensor([d["annotations"][0]["bbox"]]))
            inst.scores = torch.tensor([0.9])
            inst.pred_classes = torch.tensor([d["image_id"] % 2 if d["image_id"] != 3 else 0])  # image 3: wrong class
            outputs[d["image_id"]] = {"instances": inst}
        loader = [[{"image_id": d["image_id"], "height": 200, "width": 300}] for d in dicts]
        ev = CarDDEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "conv"))
        res = inference_on_dataset(FakeModel(outputs), loader, ev)["bbox"]
        # small dent: GT on images 1 and 3, only image 1 found -> recall 0.5: 51 of 101 recall points at precision 1
        assert res["AP-small dent"] == pytest.approx(100 * 51 / 101)
        converted = MetadataCatalog.get(name).json_file
        assert os.path.dirname(converted) == str(tmp_path / "conv")
        ref = evaluate_coco_json(converted, str(tmp_path / "conv" / "coco_instances_results.json"), tasks=["bbox"])
        assert ref["bbox"] == pytest.approx(res, nan_ok=True)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_annotation_ids_from_zero_in_a_registered_dataset(register):
    """CarDDEvaluator reads the registered json; ids from 0 still give AP 100 for perfect predictions."""
    gt = make_gt(seed=3, n_images=5)
    for k, a in enumerate(gt["annotations"]):
        a["id"] = k
    preds = f32_exact([
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
         "segmentation": jsonable_rle(rle_of(a["segmentation"][0]))}
        for a in gt["annotations"]
    ])
    name = register(gt)
    res = run(CarDDEvaluator(name, distributed=False), gt, to_model_outputs(gt, preds, name))
    for task in ("bbox", "segm"):
        assert res[task]["AP"] == pytest.approx(100.0), task
