"""DATASETS.REGISTER_COCO and the start-of-run checks of register_datasets_for_cfg (own data, any ids / classes)."""
import json
import logging
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from cardd_d2.data import CarDDDataError, config_keys_given, register_datasets_for_cfg
from cardd_d2.data import datasets as ds_mod
from cardd_d2.data.synthetic import make_synthetic_coco
from cardd_d2.engine import setup_cfg
from tiny_config import config_path

QUICK = config_path("CarDD/quickstart/mask_rcnn_R_50_narrow_FPN_scratch.yaml")
NAMES = ["dent", "scuff", "crack", "broken glass"]
OWN = ("own_cfg_train", "own_cfg_test")


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return make_synthetic_coco(str(tmp_path_factory.mktemp("own")), NAMES, num_images=(3, 1, 2),
                               image_size=(128, 96), seed=2, first_id=0)


@pytest.fixture(autouse=True)
def unregister():
    yield
    for n in list(DatasetCatalog.list()):
        if n.startswith("own_cfg_"):
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
            ds_mod._REGISTERED.pop(n, None)


def _opts(own, test_json=None, extra=()):
    declared = [[OWN[0], own["json"]["train"], own["image_dirs"]["train"]],
                [OWN[1], test_json or own["json"]["test"], own["image_dirs"]["test"]]]
    return ["DATASETS.REGISTER_COCO", repr(declared), "DATASETS.TRAIN", f"('{OWN[0]}',)",
            "DATASETS.TEST", f"('{OWN[1]}',)", "DATASETS.CHECK_IMAGES", "False"] + list(extra)


def _setup(opts):
    cfg = setup_cfg(QUICK, opts, freeze=False)
    return cfg, config_keys_given(QUICK, opts)


def test_own_data_declared_in_the_config_classes_from_the_data(own, caplog):
    opts = _opts(own)
    cfg, given = _setup(opts)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 6  # inherited from the CarDD base config
    assert "MODEL.ROI_HEADS.NUM_CLASSES" not in given and "DATASETS.REGISTER_COCO" in given
    with caplog.at_level(logging.INFO, logger="cardd_d2.data.datasets_from_cfg"):
        assert register_datasets_for_cfg(cfg, given_keys=given) == list(OWN)
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4
        register_datasets_for_cfg(cfg)  # what each training process does: now the count matches
    assert "MODEL.ROI_HEADS.NUM_CLASSES = 4, the classes of dataset own_cfg_train" in caplog.text
    assert "classes of own_cfg_train, own_cfg_test" in caplog.text and "dent, scuff, crack, broken glass" in caplog.text
    for name in OWN:
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == NAMES and meta.thing_dataset_id_to_contiguous_id == {0: 0, 1: 1, 2: 2, 3: 3}
    dicts = DatasetCatalog.get(OWN[0])
    assert len(dicts) == 3 and dicts[0]["image_id"] == 0
    assert {a["category_id"] for d in dicts for a in d["annotations"]} <= {0, 1, 2, 3}


def test_class_count_set_by_the_user_must_match(own):
    opts = _opts(own, extra=["MODEL.ROI_HEADS.NUM_CLASSES", "6"])
    cfg, given = _setup(opts)
    with pytest.raises(CarDDDataError, match=r"MODEL.ROI_HEADS.NUM_CLASSES is 6 but dataset own_cfg_train .* has 4 "
                                             r"classes .*set MODEL.ROI_HEADS.NUM_CLASSES 4"):
        register_datasets_for_cfg(cfg, given_keys=given)
    cfg, _ = _setup(_opts(own))
    cfg.freeze()  # a frozen config cannot take the count from the data either
    with pytest.raises(CarDDDataError, match="set MODEL.ROI_HEADS.NUM_CLASSES 4"):
        register_datasets_for_cfg(cfg, given_keys=set())
    cfg, given = _setup(_opts(own, extra=["MODEL.CLASS_NAMES", "['a', 'b', 'c', 'd']"]))
    with pytest.raises(CarDDDataError, match=r"MODEL.CLASS_NAMES is \['a', 'b', 'c', 'd'\] but dataset own_cfg_train"):
        register_datasets_for_cfg(cfg, given_keys=given)


def test_missing_test_json_fails_at_start_naming_the_key(own, tmp_path):
    cfg, given = _setup(_opts(own, test_json=str(tmp_path / "nope.json")))
    with pytest.raises(CarDDDataError, match=r"dataset own_cfg_test: annotation file not found: .*nope.json; fix its "
                                             r"entry in DATASETS.REGISTER_COCO"):
        register_datasets_for_cfg(cfg, given_keys=given)
    # an evaluation-only run does not need the training json
    train_missing = _opts(own)
    train_missing[1] = train_missing[1].replace(own["json"]["train"], str(tmp_path / "gone.json"))
    cfg, given = _setup(train_missing)
    register_datasets_for_cfg(cfg, given_keys=given, training=False)
    with pytest.raises(CarDDDataError, match="gone.json"):
        register_datasets_for_cfg(cfg, given_keys=given)


def test_empty_annotations_and_other_classes_fail_at_start(own, tmp_path):
    test = json.load(open(own["json"]["test"]))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(dict(test, annotations=[])))
    cfg, given = _setup(_opts(own, test_json=str(empty)))
    with pytest.raises(CarDDDataError, match=r"empty.json: the 'annotations' list is empty"):
        register_datasets_for_cfg(cfg, given_keys=given)
    other = tmp_path / "other.json"
    cats = [dict(c, name=c["name"].upper()) for c in test["categories"]]
    other.write_text(json.dumps(dict(test, categories=cats)))
    cfg, given = _setup(_opts(own, test_json=str(other)))
    with pytest.raises(CarDDDataError, match=r"datasets own_cfg_train and own_cfg_test have different classes"):
        register_datasets_for_cfg(cfg, given_keys=given)


def test_unknown_dataset_and_bad_declaration(own):
    cfg, given = _setup(["DATASETS.TRAIN", "('own_cfg_nowhere',)", "DATASETS.TEST", "()"])
    with pytest.raises(CarDDDataError, match=r"'own_cfg_nowhere' .* is not registered: declare it in "
                                             r"DATASETS.REGISTER_COCO"):
        register_datasets_for_cfg(cfg, given_keys=given)
    cfg, given = _setup(["DATASETS.REGISTER_COCO", "[['own_cfg_x', 'a.json']]"])
    with pytest.raises(CarDDDataError, match=r"DATASETS.REGISTER_COCO: each entry is \[name, json file, image folder\]"):
        register_datasets_for_cfg(cfg, given_keys=given)


def test_config_keys_given_ignores_base_files(tmp_path):
    cfg_file = tmp_path / "own.yaml"
    cfg_file.write_text(f'_BASE_: "{QUICK}"\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 3\nSOLVER:\n  MAX_ITER: 5\n')
    assert config_keys_given(str(cfg_file), ["OUTPUT_DIR", "x"]) == {
        "MODEL.ROI_HEADS.NUM_CLASSES", "SOLVER.MAX_ITER", "OUTPUT_DIR"}
    assert "MODEL.ROI_HEADS.NUM_CLASSES" not in config_keys_given(QUICK)
    assert os.path.isfile(QUICK)
