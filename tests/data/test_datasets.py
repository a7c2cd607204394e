"""register_cardd / register_coco_damage / validate_coco_json: metadata, loading and every bad-data case."""
import copy
import json
import logging
import os
import shutil

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from cardd_d2.data import (
    CARDD_CLASS_NAMES,
    CarDDDataError,
    register_cardd,
    register_datasets_for_cfg,
    register_coco_damage,
    validate_coco_json,
)
from cardd_d2.data import datasets as ds_mod
from cardd_d2.data.synthetic import make_synthetic_cardd

CARDD_NAMES = ("cardd_train", "cardd_val", "cardd_test")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_synthetic_cardd(str(tmp_path_factory.mktemp("ds_small")), num_images=(4, 2, 2),
                                image_size=(256, 192), seed=7, write_sod=False)


@pytest.fixture
def keep_cardd_registration():
    """Restore whatever cardd_* registration existed (e.g. a shared fixture's) after the test."""
    saved = {}
    for n in CARDD_NAMES:
        if n in DatasetCatalog.list():
            saved[n] = (DatasetCatalog[n], MetadataCatalog.get(n).as_dict(), ds_mod._REGISTERED.get(n))
    yield
    for n in CARDD_NAMES:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
        ds_mod._REGISTERED.pop(n, None)
        if n in saved:
            func, meta, key = saved[n]
            meta.pop("name", None)
            DatasetCatalog.register(n, func)
            MetadataCatalog.get(n).set(**meta)
            if key is not None:
                ds_mod._REGISTERED[n] = key


def _copy_split(data, tmp_path, split="train"):
    """A private copy of one split: (json path, image dir, loaded json)."""
    img_dir = tmp_path / "images"
    shutil.copytree(data["image_dirs"][split], img_dir)
    with open(data["json"][split]) as f:
        coco = json.load(f)
    return str(tmp_path / "ann.json"), str(img_dir), coco


def _write(path, coco):
    with open(path, "w") as f:
        json.dump(coco, f)


# ----------------------------------------------------------------------------------------------- registration
def test_register_cardd_metadata_and_dicts(small_data, keep_cardd_registration):
    names = register_cardd(small_data["root"], check_images=True)
    assert names == list(CARDD_NAMES)
    for split, name in zip(("train", "val", "test"), names):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(CARDD_CLASS_NAMES)
        assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}
        assert len(meta.thing_colors) == 6
        assert meta.json_file == small_data["json"][split]
        assert meta.image_root == small_data["image_dirs"][split]
        assert meta.evaluator_type == "cardd"
    dicts = DatasetCatalog.get("cardd_train")
    with open(small_data["json"]["train"]) as f:
        coco = json.load(f)
    assert len(dicts) == len(coco["images"])
    assert sum(len(d["annotations"]) for d in dicts) == len(coco["annotations"])
    by_id = {a["id"]: a for a in coco["annotations"]}
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and (d["width"], d["height"]) == (256, 192)
        for a in d["annotations"]:
            assert 0 <= a["category_id"] <= 5 and a["bbox_mode"] == BoxMode.XYWH_ABS
            assert isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6
    # contiguous ids follow the json ids
    assert sorted(a["category_id"] + 1 for d in dicts for a in d["annotations"]) == sorted(
        a["category_id"] for a in by_id.values()
    )


def test_register_cardd_idempotent_and_replaced(small_data, tmp_path, keep_cardd_registration):
    register_cardd(small_data["root"])
    loader = DatasetCatalog["cardd_val"]
    register_cardd(small_data["root"])
    assert DatasetCatalog["cardd_val"] is loader  # same root: no-op
    register_cardd(os.path.join(small_data["root"], "CarDD_COCO"))  # the CarDD_COCO folder itself is accepted
    assert DatasetCatalog["cardd_val"] is loader
    other = str(tmp_path / "elsewhere")
    register_cardd(other)
    assert DatasetCatalog["cardd_val"] is not loader
    assert MetadataCatalog.get("cardd_val").json_file.startswith(other)
    with pytest.raises(CarDDDataError, match="CARDD_DATASETS"):
        DatasetCatalog.get("cardd_val")


def test_register_cardd_default_root_from_env(small_data, monkeypatch, keep_cardd_registration):
    monkeypatch.setenv("CARDD_DATASETS", small_data["root"])
    register_cardd()
    assert MetadataCatalog.get("cardd_test").json_file == small_data["json"]["test"]
    monkeypatch.delenv("CARDD_DATASETS")
    monkeypatch.chdir(small_data["root"])
    register_cardd()
    assert MetadataCatalog.get("cardd_test").json_file == os.path.join(
        small_data["root"], "datasets", "CarDD_COCO", "annotations", "instances_test2017.json"
    )


def test_register_cardd_from_cfg(small_data, keep_cardd_registration):
    from cardd_d2.config import get_cardd_cfg

    cfg = get_cardd_cfg()
    cfg.DATASETS.ROOT = small_data["root"]
    cfg.DATASETS.CHECK_IMAGES = False
    register_datasets_for_cfg(cfg)
    assert MetadataCatalog.get("cardd_train").image_root == small_data["image_dirs"]["train"]
    assert ds_mod._REGISTERED["cardd_train"].check_images is False  # check_images from the config
    assert len(DatasetCatalog.get("cardd_train")) == 4


def test_register_coco_damage_non_cardd_classes(small_data, tmp_path):
    json_file, image_root, coco = _copy_split(small_data, tmp_path)
    coco["categories"] = [{"id": 42, "name": "rust", "supercategory": "x"}, {"id": 7, "name": "scuff"}]
    for a in coco["annotations"]:
        a["category_id"] = 7 if a["category_id"] % 2 else 42
    _write(json_file, coco)
    name = "test_data_two_classes"
    try:
        register_coco_damage(name, json_file, image_root)
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["scuff", "rust"]
        assert meta.thing_dataset_id_to_contiguous_id == {7: 0, 42: 1}
        dicts = DatasetCatalog.get(name)
        got = sorted(a["category_id"] for d in dicts for a in d["annotations"])
        assert got == sorted(0 if a["category_id"] == 7 else 1 for a in coco["annotations"])
        loader = DatasetCatalog[name]
        register_coco_damage(name, json_file, image_root)
        assert DatasetCatalog[name] is loader
        # an expected class list that the json does not match is reported clearly
        register_coco_damage(name, json_file, image_root, class_names=["rust", "scuff"])
        assert DatasetCatalog[name] is not loader
        with pytest.raises(CarDDDataError, match=r"categories \(by id\) are \['scuff', 'rust'\]"):
            DatasetCatalog.get(name)
    finally:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


# ----------------------------------------------------------------------------------------------- bad data
def _first_ann(coco, k=0):
    a = coco["annotations"][k]
    im = next(i for i in coco["images"] if i["id"] == a["image_id"])
    return a, im


def _break_missing_file(coco, img_dir):
    im = coco["images"][1]
    os.remove(os.path.join(img_dir, im["file_name"]))
    return "missing_image", im["file_name"], im["id"], None


def _break_corrupt_file(coco, img_dir):
    im = coco["images"][2]
    path = os.path.join(img_dir, im["file_name"])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])  # truncated JPEG
    return "unreadable_image", im["file_name"], im["id"], None


def _break_garbage_file(coco, img_dir):
    im = coco["images"][0]
    with open(os.path.join(img_dir, im["file_name"]), "wb") as f:
        f.write(b"this is not a jpeg")
    return "unreadable_image", im["file_name"], im["id"], None


def _break_size(coco, img_dir):
    im = coco["images"][3]
    im["width"] = 300
    return "size_mismatch", im["file_name"], im["id"], None


def _break_category(coco, img_dir):
    a, im = _first_ann(coco, 1)
    a["category_id"] = 99
    return "unknown_category", im["file_name"], im["id"], a["id"]


def _break_two_points(coco, img_dir):
    a, im = _first_ann(coco, 0)
    a["segmentation"] = [[10.0, 10.0, 20.0, 20.0]]
    return "bad_polygon", im["file_name"], im["id"], a["id"]


def _break_zero_area(coco, img_dir):
    a, im = _first_ann(coco, 2)
    a["segmentation"] = [[10.0, 10.0, 20.0, 10.0, 30.0, 10.0]]
    return "bad_polygon", im["file_name"], im["id"], a["id"]


def _break_bbox_outside(coco, img_dir):
    a, im = _first_ann(coco, 1)
    a["bbox"] = [im["width"] - 5.0, 0.0, 10.0, 10.0]
    return "bad_bbox", im["file_name"], im["id"], a["id"]


def _break_bbox_size(coco, img_dir):
    a, im = _first_ann(coco, 0)
    a["bbox"] = [5.0, 5.0, 0.0, 10.0]
    return "bad_bbox", im["file_name"], im["id"], a["id"]


def _break_dup_image(coco, img_dir):
    im = coco["images"][1]
    coco["images"].append(dict(coco["images"][2], id=im["id"]))  # a second entry with image 1's id
    return "duplicate_image_id", im["file_name"], im["id"], None


def _break_dup_file(coco, img_dir):
    im = coco["images"][0]
    coco["images"][3]["file_name"] = im["file_name"]  # the same photo listed under a second id
    return "duplicate_file_name", im["file_name"], im["id"], None


def _break_dup_ann(coco, img_dir):
    a, im = _first_ann(coco, 3)
    coco["annotations"][3]["id"] = coco["annotations"][0]["id"]
    return "duplicate_annotation_id", im["file_name"], im["id"], coco["annotations"][0]["id"]


def _break_missing_image_id(coco, img_dir):
    a = coco["annotations"][0]
    a["image_id"] = 777
    return "missing_image_id", None, 777, a["id"]


BREAKERS = [
    _break_missing_file, _break_corrupt_file, _break_garbage_file, _break_size, _break_category,
    _break_two_points, _break_zero_area, _break_bbox_outside, _break_bbox_size, _break_dup_image,
    _break_dup_file, _break_dup_ann, _break_missing_image_id,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__[7:])
def test_bad_data_raises_naming_file_and_ids(small_data, tmp_path, breaker):
    json_file, image_root, coco = _copy_split(small_data, tmp_path)
    # sanity: the untouched copy is valid
    _write(json_file, coco)
    assert validate_coco_json(json_file, image_root).ok
    kind, fname, image_id, ann_id = breaker(coco, image_root)
    _write(json_file, coco)
    name = "test_data_bad"
    register_coco_damage(name, json_file, image_root, check_images=True)
    try:
        with pytest.raises(CarDDDataError) as err:
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    expected = 2 if kind in ("duplicate_image_id", "duplicate_file_name") else 1  # every entry sharing it
    assert json_file in msg and f"[{kind}]" in msg and f"{kind}={expected}" in msg
    assert f"(id {image_id})" in msg
    if fname is not None:
        assert repr(fname) in msg
    if ann_id is not None:
        assert f"annotation id {ann_id}" in msg
    assert [p.kind for p in err.value.problems] == [kind] * expected


def test_check_images_off_skips_decoding_but_not_existence(small_data, tmp_path):
    json_file, image_root, coco = _copy_split(small_data, tmp_path)
    _break_garbage_file(coco, image_root)
    _write(json_file, coco)
    assert validate_coco_json(json_file, image_root, check_images=False).ok
    assert not validate_coco_json(json_file, image_root, check_images=True).ok
    _break_missing_file(coco, image_root)
    report = validate_coco_json(json_file, image_root, check_images=False)
    assert [p.kind for p in report.problems] == ["missing_image"]


def test_all_problems_collected_truncated_and_skipped(small_data, tmp_path, caplog):
    json_file, image_root, coco = _copy_split(small_data, tmp_path)
    n_img, n_ann = len(coco["images"]), len(coco["annotations"])
    _break_missing_file(coco, image_root)
    _break_category(coco, image_root)
    _break_bbox_size(coco, image_root)
    # 25 extra annotations with a 2-point polygon on image 0 (also exercises truncation)
    im0 = coco["images"][0]
    for k in range(25):
        coco["annotations"].append({"id": 10000 + k, "image_id": im0["id"], "category_id": 1, "iscrowd": 0,
                                    "bbox": [1, 1, 5, 5], "area": 1.0, "segmentation": [[1, 1, 5, 5]]})
    _write(json_file, coco)
    report = validate_coco_json(json_file, image_root)
    assert report.counts() == {"missing_image": 1, "unknown_category": 1, "bad_polygon": 25, "bad_bbox": 1}
    with pytest.raises(CarDDDataError) as err:
        report.raise_if_invalid()
    msg = str(err.value)
    assert "... and 8 more" in msg and "28 problem(s)" in msg
    assert "missing_image=1, unknown_category=1, bad_polygon=25, bad_bbox=1" in msg

    name = "test_data_skip"
    register_coco_damage(name, json_file, image_root, skip_invalid=True)
    try:
        with caplog.at_level(logging.WARNING, logger="cardd_d2.data.datasets"):
            dicts = DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    missing_id = coco["images"][1]["id"]
    assert len(dicts) == n_img - 1 and missing_id not in {d["image_id"] for d in dicts}
    # kept: the original annotations except those on the missing image and the two broken ones (indices 0, 1)
    expected = sorted(a["id"] for k, a in enumerate(coco["annotations"][:n_ann])
                      if a["image_id"] != missing_id and k not in (0, 1))
    assert sorted(a["id"] for a in report.cleaned()["annotations"]) == expected
    assert sum(len(d["annotations"]) for d in dicts) == len(expected)
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert f"dropped 1 of {n_img} images" in warning and "bad_polygon=25" in warning and json_file in warning


def test_structural_errors_always_raise(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(CarDDDataError, match="not found"):
        validate_coco_json(missing, str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CarDDDataError, match="not valid JSON"):
        validate_coco_json(str(bad), str(tmp_path))
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(CarDDDataError, match="'categories'"):
        validate_coco_json(str(bad), str(tmp_path))
    bad.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(CarDDDataError, match="expected"):
        validate_coco_json(str(bad), str(tmp_path), class_names=["dent"])
    report = validate_coco_json(str(bad), str(tmp_path))
    assert report.ok and copy.deepcopy(report.cleaned())["images"] == []


# ----------------------------------------------------------------------------------------------- config switches
def _cfg(names, **switches):
    from cardd_d2.config import get_cardd_cfg

    cfg = get_cardd_cfg()
    cfg.DATASETS.TRAIN = tuple(names)
    cfg.DATASETS.TEST = ()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    for k, v in switches.items():
        cfg.DATASETS[k] = v
    return cfg


def test_config_switches_apply_to_register_coco_damage(small_data, tmp_path, caplog):
    json_file, image_root, coco = _copy_split(small_data, tmp_path)
    n_img = len(coco["images"])
    _break_missing_file(coco, image_root)
    _write(json_file, coco)
    name = "test_data_switch"
    register_coco_damage(name, json_file, image_root)  # defaults: raise on problems, open every image
    try:
        with pytest.raises(CarDDDataError, match="missing_image"):
            DatasetCatalog.get(name)
        register_datasets_for_cfg(_cfg([name], SKIP_INVALID=True))
        assert len(DatasetCatalog.get(name)) == n_img - 1
        assert MetadataCatalog.get(name).json_file == json_file  # the same dataset, only the switch changed
        # CHECK_IMAGES False: a garbage file is not opened (SKIP_INVALID False again: anything else would raise)
        shutil.copy(os.path.join(image_root, coco["images"][0]["file_name"]),
                    os.path.join(image_root, coco["images"][1]["file_name"]))
        _break_garbage_file(coco, image_root)
        register_datasets_for_cfg(_cfg([name], CHECK_IMAGES=False))
        assert len(DatasetCatalog.get(name)) == n_img
        register_datasets_for_cfg(_cfg([name]))
        with pytest.raises(CarDDDataError, match="unreadable_image"):
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        ds_mod._REGISTERED.pop(name, None)

    other = "test_data_not_ours"
    DatasetCatalog.register(other, lambda: [])
    try:
        with caplog.at_level(logging.WARNING, logger="cardd_d2.data.datasets"):
            register_datasets_for_cfg(_cfg([other], SKIP_INVALID=True))
        assert "test_data_not_ours was not registered by cardd_d2.data" in caplog.text
    finally:
        DatasetCatalog.remove(other)


def test_empty_annotation_list_is_an_error_at_registration(small_data, tmp_path):
    json_file, image_root, coco = _copy_split(small_data, tmp_path)
    coco["annotations"] = []
    _write(json_file, coco)
    name = "test_data_empty"
    with pytest.raises(CarDDDataError, match=r"ann\.json: the 'annotations' list is empty \(4 images\)"):
        register_coco_damage(name, json_file, image_root)
    assert name not in DatasetCatalog.list()
    # a json that appears (empty) only after registration fails when loaded
    later = str(tmp_path / "later.json")
    register_coco_damage(name, later, image_root)
    try:
        _write(later, coco)
        with pytest.raises(CarDDDataError, match="later.json: the 'annotations' list is empty"):
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        ds_mod._REGISTERED.pop(name, None)


def test_nothing_left_after_skipping_is_an_error(small_data, tmp_path):
    json_file, image_root, coco = _copy_split(small_data, tmp_path)
    for a in coco["annotations"]:
        a["category_id"] = 99
    _write(json_file, coco)
    name = "test_data_all_bad"
    register_coco_damage(name, json_file, image_root, skip_invalid=True)
    try:
        with pytest.raises(CarDDDataError, match="no valid annotation is left"):
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        ds_mod._REGISTERED.pop(name, None)


def test_cardd_splits_are_registered_on_import(small_data):
    import subprocess
    import sys

    code = ("import cardd_d2.data; from detectron2.data import DatasetCatalog, MetadataCatalog; "
            "print(sorted(n for n in DatasetCatalog.list() if n.startswith('cardd_'))); "
            "print(MetadataCatalog.get('cardd_test').json_file)")
    env = dict(os.environ, CARDD_DATASETS=small_data["root"])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == str(sorted(CARDD_NAMES)) and lines[-1] == small_data["json"]["test"]
