"""Class-wise datasets (Table IX): test sets are the images with the class (as the released evaluation read them);
the training set is a named choice -- "all" (default, the released generator's last state) or "subset"."""
import json
import os

import cv2
import pytest

from cardd_sod.classwise import build_classwise_datasets
from cardd_sod.data import read_sod_split
from cardd_sod.data.coco import cardd_coco_sources


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    from cardd_d2.data.synthetic import make_synthetic_cardd
    return make_synthetic_cardd(str(tmp_path_factory.mktemp("cw_syn")), num_images=(6, 3, 3), image_size=(96, 72),
                                seed=3, write_sod=False)


def _images_with(json_path, name):
    with open(json_path) as f:
        d = json.load(f)
    cid = next(c["id"] for c in d["categories"] if c["name"] == name)
    with_cls = {a["image_id"] for a in d["annotations"] if a["category_id"] == cid}
    stems = {i["id"]: os.path.splitext(i["file_name"])[0] for i in d["images"]}
    return sorted(stems[i] for i in with_cls), sorted(stems.values())


@pytest.mark.parametrize("train_set", ["all", "subset"])
def test_train_set_recipes(syn, tmp_path, train_set):
    sources = cardd_coco_sources(syn["coco_root"], ["TR", "TE"])
    out = build_classwise_datasets(sources, str(tmp_path), ["glass shatter"], train_set=train_set)
    info = out["glass_shatter"]
    tr_cls, tr_all = _images_with(syn["json"]["train"], "glass shatter")
    te_cls, _ = _images_with(syn["json"]["test"], "glass shatter")
    assert tr_cls and te_cls and len(tr_cls) < len(tr_all)  # the synthetic set has images without the class
    tr = read_sod_split(info["root"], "TR")
    assert [s.name for s in read_sod_split(info["root"], "TE")] == te_cls  # test: always the subset
    if train_set == "all":
        assert [s.name for s in tr] == tr_all and info["TR"]["num_empty"] == len(tr_all) - len(tr_cls)
        empty = [s.name for s in tr if not cv2.imread(s.mask, cv2.IMREAD_GRAYSCALE).any()]
        assert empty == sorted(set(tr_all) - set(tr_cls))
    else:
        assert [s.name for s in tr] == tr_cls and info["TR"]["num_empty"] == 0
    with pytest.raises(ValueError, match="train_set"):
        build_classwise_datasets(sources, str(tmp_path / "x"), ["dent"], train_set="some")
