import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from cardd_d2.assessment.instances import (
    DEFAULT_REPAIR_PRIORITY,
    instances_to_dicts,
    mask_to_polygons,
    mask_to_rle,
    rle_to_mask,
    sort_by_priority,
)


def _instances(h, w, squares, classes, scores):
    inst = Instances((h, w))
    masks = torch.zeros((len(squares), h, w), dtype=torch.bool)
    boxes = []
    for k, (x0, y0, s) in enumerate(squares):
        masks[k, y0:y0 + s, x0:x0 + s] = True
        boxes.append([x0, y0, x0 + s, y0 + s])
    inst.pred_masks = masks
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.pred_classes = torch.tensor(classes)
    inst.scores = torch.tensor(scores)
    return inst


def test_rle_roundtrip_and_json_ready():
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    rle = mask_to_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [37, 53]
    np.testing.assert_array_equal(rle_to_mask(rle), m)


def test_instances_to_dicts_fields_areas_and_size_buckets():
    # 127x127 (small), 128x128 (medium: 128^2 is not < 128^2), 256x256 (large) on a 300x400 image.
    inst = _instances(300, 400, [(0, 0, 127), (10, 10, 128), (20, 20, 256)], [0, 2, 5], [0.9, 0.5, 0.3])
    out = instances_to_dicts(inst)
    assert [d["class"] for d in out] == ["dent", "crack", "tire flat"]
    assert [d["class_id"] for d in out] == [0, 2, 5]
    assert [d["size_bucket"] for d in out] == ["small", "medium", "large"]
    assert [d["area_px"] for d in out] == [127 * 127, 128 * 128, 256 * 256]
    assert out[2]["area_pct"] == pytest.approx(100 * 256 * 256 / (300 * 400), abs=1e-3)
    assert out[1]["bbox"] == [10.0, 10.0, 138.0, 138.0]
    assert out[0]["score"] == pytest.approx(0.9)
    assert rle_to_mask(out[1]["mask"]).sum() == 128 * 128
    assert "polygon" not in out[0]


def test_score_threshold_polygons_and_class_names():
    inst = _instances(40, 40, [(2, 2, 10), (20, 20, 12)], [1, 7], [0.2, 0.8])
    out = instances_to_dicts(inst, class_names=["a", "b"], with_polygon=True, score_threshold=0.5)
    assert len(out) == 1 and out[0]["class"] == "class_7"  # unknown id -> generic name
    poly = out[0]["polygon"]
    assert len(poly) == 1 and len(poly[0]) >= 8
    xs, ys = poly[0][0::2], poly[0][1::2]
    assert min(xs) >= 20 and max(xs) <= 32.5 and min(ys) >= 20 and max(ys) <= 32.5


def test_boxes_only_and_empty():
    inst = Instances((50, 60))
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 20.0]]))
    inst.scores = torch.tensor([0.7])
    inst.pred_classes = torch.tensor([1])
    (d,) = instances_to_dicts(inst)
    assert d["area_px"] == 200 and "mask" not in d and d["class"] == "scratch"
    assert instances_to_dicts(inst[inst.scores > 0.9]) == []


def test_mask_to_polygons_empty_mask():
    assert mask_to_polygons(np.zeros((8, 8), bool)) == []


def test_sort_by_priority_crack_dent_scratch_then_others_then_score():
    items = [{"class": c, "score": s} for c, s in
             [("scratch", 0.99), ("tire flat", 0.9), ("dent", 0.5), ("crack", 0.3), ("dent", 0.7),
              ("glass shatter", 0.4), ("mystery", 1.0), ("lamp broken", 0.2)]]
    out = sort_by_priority(items)
    assert [(d["class"], d["score"]) for d in out] == [
        ("crack", 0.3), ("dent", 0.7), ("dent", 0.5), ("scratch", 0.99), ("glass shatter", 0.4),
        ("lamp broken", 0.2), ("tire flat", 0.9), ("mystery", 1.0)]
    assert [d["priority_rank"] for d in out] == list(range(8))
    assert DEFAULT_REPAIR_PRIORITY[:3] == ("crack", "dent", "scratch")
