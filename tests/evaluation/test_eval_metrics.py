"""evaluate_coco_json against plain pycocotools, bucket definitions, edge cases and bad input."""
import copy
import math

import numpy as np
import pytest

from cardd_d2.evaluation import CARDD_AREA_RANGES, evaluate_coco_json
from eval_synth import jsonable_rle, rle_of

CARDD_RNG = [[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]]
STAT_KEYS = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}


def as_pct(stat):
    return float("nan") if stat < 0 else stat * 100


def assert_same(ours, ref, tol=1e-9):
    if math.isnan(ref):
        assert math.isnan(ours), (ours, ref)
    else:
        assert abs(ours - ref) <= tol, (ours, ref)


def test_area_ranges_are_the_papers():
    assert [list(r) for r in CARDD_AREA_RANGES] == CARDD_RNG


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_equals_pycocotools_exactly(synth_gt, synth_preds, synth_files, reference_stats, task):
    res = evaluate_coco_json(synth_files["gt"], synth_files["preds"], tasks=[task])[task]
    ref = reference_stats(synth_gt, synth_preds, task, area_rng=CARDD_RNG)
    for key, idx in STAT_KEYS.items():
        assert_same(res[key], as_pct(ref[idx]))
    coco_ref = reference_stats(synth_gt, synth_preds, task)  # pycocotools' default 32^2/96^2 ranges
    for key, idx in {"coco_APs": 3, "coco_APm": 4, "coco_APl": 5}.items():
        assert_same(res[key], as_pct(coco_ref[idx]))
    assert_same(res["AP"], as_pct(coco_ref[0]))  # "all" does not depend on the buckets
    n_defined = 0
    for cat in synth_gt["categories"]:
        per = reference_stats(synth_gt, synth_preds, task, area_rng=CARDD_RNG, cat_ids=[cat["id"]])
        assert_same(res[f"AP-{cat['name']}"], as_pct(per[0]))
        assert_same(res[f"AP50-{cat['name']}"], as_pct(per[1]))
        n_defined += per[0] >= 0
    assert n_defined == 5  # the data really has five classes with ground truth
    # the synthetic data is informative: numbers are neither trivial nor all equal
    assert 5 < res["AP"] < 95 and res["AP50"] > res["AP75"]


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_size_buckets_matter(synth_gt, synth_preds, reference_stats, task):
    """The comparison above can fail: COCO's buckets give different numbers than CarDD's."""
    cardd = evaluate_coco_json(synth_gt, synth_preds, tasks=[task])[task]
    coco = evaluate_coco_json(synth_gt, synth_preds, tasks=[task], area_ranges="coco")[task]
    ref_coco = reference_stats(synth_gt, synth_preds, task)
    for key in ("APs", "APm", "APl"):
        assert cardd[key] != coco[key]
        assert coco[key] == cardd["coco_" + key]
    assert abs(cardd["APs"] - as_pct(ref_coco[3])) > 1e-3
    assert cardd["AP"] == coco["AP"]


def test_segm_uses_mask_area_and_differs_from_bbox(synth_gt, synth_preds):
    res = evaluate_coco_json(synth_gt, synth_preds)
    assert set(res) == {"bbox", "segm"}
    assert res["bbox"]["AP"] != res["segm"]["AP"]


def test_class_without_ground_truth_is_nan_not_zero(synth_gt, synth_preds):
    assert any(p["category_id"] == 6 for p in synth_preds)  # detections exist for it
    res = evaluate_coco_json(synth_gt, synth_preds, tasks=["segm"])["segm"]
    assert math.isnan(res["AP-tire flat"]) and math.isnan(res["AP50-tire flat"])
    assert not math.isnan(res["AP-dent"])


def test_zero_predictions(synth_gt):
    res = evaluate_coco_json(synth_gt, [])
    for task in ("bbox", "segm"):
        r = res[task]
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "coco_APs", "coco_APm", "coco_APl"):
            assert r[key] == 0.0, key
        for c in ("dent", "scratch", "crack", "glass shatter", "lamp broken"):
            assert r[f"AP-{c}"] == 0.0
        assert math.isnan(r["AP-tire flat"])


def test_empty_bucket_is_nan(synth_gt, synth_preds):
    gt = dict(synth_gt, annotations=[a for a in synth_gt["annotations"] if a["area"] < 128**2])
    res = evaluate_coco_json(gt, synth_preds, tasks=["bbox"], report_coco_sizes=False)["bbox"]
    assert math.isnan(res["APm"]) and math.isnan(res["APl"]) and not math.isnan(res["APs"])
    assert "coco_APs" not in res


def test_detections_on_image_without_annotations_are_false_positives(synth_gt, synth_preds):
    from eval_synth import EMPTY_IMAGE_ID

    base = evaluate_coco_json(synth_gt, synth_preds, tasks=["bbox"])["bbox"]
    extra = [
        {"image_id": EMPTY_IMAGE_ID, "category_id": c, "bbox": [10, 10, 200, 200], "score": 0.999}
        for c in range(1, 6)
    ]
    worse = evaluate_coco_json(synth_gt, synth_preds + extra, tasks=["bbox"])["bbox"]
    assert worse["AP"] < base["AP"]


def test_explicit_area_ranges_and_validation(synth_gt, synth_preds):
    res = evaluate_coco_json(synth_gt, synth_preds, tasks=["bbox"], area_ranges=CARDD_RNG)["bbox"]
    ref = evaluate_coco_json(synth_gt, synth_preds, tasks=["bbox"])["bbox"]
    assert res == pytest.approx(ref, nan_ok=True)
    with pytest.raises(ValueError, match="four"):
        evaluate_coco_json(synth_gt, synth_preds, tasks=["bbox"], area_ranges=CARDD_RNG[:3])
    with pytest.raises(ValueError, match="area_ranges"):
        evaluate_coco_json(synth_gt, synth_preds, tasks=["bbox"], area_ranges="voc")


def test_fast_impl_option_falls_back_to_same_numbers(synth_gt, synth_preds):
    fast = evaluate_coco_json(synth_gt, synth_preds, tasks=["segm"], use_fast_impl=True)["segm"]
    ref = evaluate_coco_json(synth_gt, synth_preds, tasks=["segm"])["segm"]
    np.testing.assert_allclose(list(fast.values()), list(ref.values()), atol=1e-6)


def test_bad_input_names_the_file(tmp_path, synth_gt, synth_preds, synth_files):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_coco_json(str(missing), synth_preds)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        evaluate_coco_json(synth_files["gt"], str(bad))
    with pytest.raises(ValueError, match="image_id 12345"):
        evaluate_coco_json(synth_gt, [dict(synth_preds[0], image_id=12345)])
    with pytest.raises(ValueError, match="category_id 77"):
        evaluate_coco_json(synth_gt, [dict(synth_preds[0], category_id=77)])
    no_mask = [{k: v for k, v in p.items() if k != "segmentation"} for p in synth_preds]
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco_json(synth_gt, no_mask, tasks=["segm"])
    assert evaluate_coco_json(synth_gt, no_mask, tasks=["bbox"])["bbox"]["AP"] > 0
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_coco_json(synth_gt, synth_preds, tasks=["keypoints"])


def perfect_predictions(gt):
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0,
         "segmentation": jsonable_rle(rle_of(a["segmentation"][0]))}
        for a in gt["annotations"]
    ]


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_annotation_ids_from_zero_perfect_predictions_score_100(synth_gt, reference_stats, task):
    """pycocotools counts a match with ground-truth id 0 as unmatched; the evaluator renumbers internally."""
    gt = copy.deepcopy(synth_gt)
    for k, a in enumerate(gt["annotations"]):
        a["id"] = k  # ids from 0, as many annotation tools export them
    preds = perfect_predictions(gt)
    assert as_pct(reference_stats(gt, preds, task, area_rng=CARDD_RNG)[0]) < 100  # plain pycocotools under-reports
    res = evaluate_coco_json(gt, preds, tasks=[task])[task]
    assert res["AP"] == pytest.approx(100.0) and res["AP50"] == pytest.approx(100.0)
    for c in ("dent", "scratch", "crack", "glass shatter", "lamp broken"):
        assert res[f"AP-{c}"] == pytest.approx(100.0)
    assert [a["id"] for a in gt["annotations"]][:2] == [0, 1]  # the caller's ground truth is not modified


def test_any_annotation_ids_give_the_same_results(synth_gt, synth_preds):
    """Ids from 0, duplicated, or large and unordered: the same numbers as the unique ids >= 1."""
    ref = evaluate_coco_json(synth_gt, synth_preds)
    for renumber in (lambda k: k, lambda k: 7, lambda k: 10**6 - 3 * k):
        gt = copy.deepcopy(synth_gt)
        for k, a in enumerate(gt["annotations"]):
            a["id"] = renumber(k)
        res = evaluate_coco_json(gt, synth_preds)
        for task in ("bbox", "segm"):
            assert res[task] == pytest.approx(ref[task], nan_ok=True)
