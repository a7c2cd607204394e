"""The on-disk layouts and split names (cardd_sod.data.layout) and that the SOD reader / converter use them."""
import os

import pytest

from cardd_sod.data import coco_to_sod, read_sod_split
from cardd_sod.data.coco import cardd_coco_sources
from cardd_sod.data.layout import (DATASET_NAMES, SOD_SPLITS, SPLITS, coco_image_dir, coco_json, coco_split_files,
                                   sod_split_dirs, sod_tag, split_name)


@pytest.mark.parametrize("alias", ["train", "TRAIN", "train2017", "TR", "tr", "CarDD-TR", "cardd_train"])
def test_split_aliases(alias):
    assert split_name(alias) == "train"
    assert sod_tag(alias) == "TR"


def test_split_names_and_paths():
    assert SPLITS == ("train", "val", "test") and SOD_SPLITS == ("TR", "VAL", "TE")
    assert DATASET_NAMES == {"train": "cardd_train", "val": "cardd_val", "test": "cardd_test"}
    assert coco_json("/r", "TE") == os.path.join("/r", "annotations", "instances_test2017.json")
    assert coco_image_dir("/r", "val") == os.path.join("/r", "val2017")
    assert set(coco_split_files("/r")) == set(SPLITS)
    d = sod_split_dirs("/s", "val2017")
    assert d["split"] == "VAL"
    assert d["image"] == os.path.join("/s", "CarDD-VAL", "CarDD-VAL-Image")
    assert d["mask"] == os.path.join("/s", "CarDD-VAL", "CarDD-VAL-Mask")
    assert d["edge"] == os.path.join("/s", "CarDD-VAL", "CarDD-VAL-Edge")
    assert d["pair_list"] == os.path.join("/s", "CarDD-VAL", "train_pair.lst")
    assert d["test_list"] == os.path.join("/s", "CarDD-VAL", "test.lst")


def test_unknown_split_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="'DUTS'"):
        split_name("DUTS")
    with pytest.raises(ValueError, match="'X'"):
        read_sod_split(str(tmp_path), "X")


def test_converter_and_reader_follow_the_layout(tmp_path):
    from cardd_d2.data.synthetic import make_synthetic_cardd
    make_synthetic_cardd(str(tmp_path / "syn"), num_images=(2, 1, 2), image_size=(96, 72), seed=3,
                               write_sod=False)
    coco_root = os.path.join(str(tmp_path / "syn"), "CarDD_COCO")
    src = cardd_coco_sources(coco_root, ["test"])
    assert src == {"TE": (coco_json(coco_root, "test"), coco_image_dir(coco_root, "test"))}
    out = str(tmp_path / "sod")
    coco_to_sod(*src["TE"], out, "test2017")
    d = sod_split_dirs(out, "TE")
    assert sorted(os.listdir(d["mask"])) == sorted(os.path.splitext(f)[0] + ".png" for f in os.listdir(d["image"]))
    assert os.path.isfile(d["test_list"]) and os.path.isfile(d["edge_list"])
    assert len(read_sod_split(out, "CarDD-TE")) == 2
