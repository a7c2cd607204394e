"""make_synthetic_cardd: official layouts, determinism, valid polygons, SOD masks, size buckets."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from cardd_d2.data.categories import CARDD_CATEGORIES, size_bucket
from cardd_d2.data.synthetic import make_synthetic_cardd


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    """The default call (24/8/8 images of 512x384) with two undamaged images."""
    return make_synthetic_cardd(str(tmp_path_factory.mktemp("syn_default")), num_undamaged=2)


def _tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_deterministic_and_seed_dependent(tmp_path):
    kw = dict(num_images=(3, 1, 1), image_size=(256, 192), num_undamaged=1)
    a = make_synthetic_cardd(str(tmp_path / "a"), seed=3, **kw)
    b = make_synthetic_cardd(str(tmp_path / "b"), seed=3, **kw)
    c = make_synthetic_cardd(str(tmp_path / "c"), seed=4, **kw)
    assert _tree_digest(a["root"]) == _tree_digest(b["root"])
    assert _tree_digest(a["root"]) != _tree_digest(c["root"])


def test_info_and_coco_layout(default_data):
    info = default_data
    root = info["root"]
    assert info["coco_root"] == os.path.join(root, "CarDD_COCO")
    assert info["sod_root"] == os.path.join(root, "CarDD_SOD")
    assert info["undamaged_dir"] == os.path.join(root, "undamaged")
    expected_ids, next_id = {}, 1
    for split, n in zip(("train", "val", "test"), (24, 8, 8)):
        assert info["json"][split] == os.path.join(root, "CarDD_COCO", "annotations", f"instances_{split}2017.json")
        assert info["image_dirs"][split] == os.path.join(root, "CarDD_COCO", f"{split}2017")
        expected_ids[split] = list(range(next_id, next_id + n))
        next_id += n
    for split in ("train", "val", "test"):
        coco = COCO(info["json"][split])
        with open(info["json"][split]) as f:
            raw = json.load(f)
        assert raw["categories"] == [
            {"id": c["id"], "name": c["name"], "supercategory": "car damages"} for c in CARDD_CATEGORIES
        ]
        assert sorted(coco.getImgIds()) == expected_ids[split]  # numbering continuous across splits
        for img in raw["images"]:
            assert img["file_name"] == f"{img['id']:06d}.jpg"
            with Image.open(os.path.join(info["image_dirs"][split], img["file_name"])) as im:
                assert im.format == "JPEG" and im.size == (img["width"], img["height"]) == (512, 384)
        ann_ids = [a["id"] for a in raw["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        per_image = {i: 0 for i in expected_ids[split]}
        for a in raw["annotations"]:
            per_image[a["image_id"]] += 1
            assert a["iscrowd"] == 0 and a["attributes"] == {"occluded": False}
            assert 1 <= a["category_id"] <= 6
            assert isinstance(a["segmentation"], list) and a["segmentation"]
            for poly in a["segmentation"]:
                assert len(poly) >= 6 and len(poly) % 2 == 0
                xy = np.asarray(poly).reshape(-1, 2)
                shoelace = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
                assert shoelace > 0
            m = coco.annToMask(a)
            assert a["area"] == pytest.approx(float(m.sum()))
            xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in a["segmentation"]])
            x, y, w, h = a["bbox"]
            assert (x, y) == pytest.approx(tuple(xy.min(0))) and (x + w, y + h) == pytest.approx(tuple(xy.max(0)))
            assert x >= 0 and y >= 0 and x + w <= 512 and y + h <= 384 and w > 0 and h > 0
        assert all(1 <= k <= 3 for k in per_image.values()), per_image
    undamaged = sorted(os.listdir(info["undamaged_dir"]))
    assert undamaged == [f"{i:06d}.jpg" for i in (41, 42)]


def test_all_size_buckets_and_classes_in_default_train(default_data):
    with open(default_data["json"]["train"]) as f:
        anns = json.load(f)["annotations"]
    assert {size_bucket(a["area"]) for a in anns} == {"small", "medium", "large"}
    assert {a["category_id"] for a in anns} == set(range(1, 7))


def test_sod_layout_masks_and_lists(default_data):
    info = default_data
    sod = info["sod_root"]
    for split, sd in (("train", "CarDD-TR"), ("val", "CarDD-VAL"), ("test", "CarDD-TE")):
        coco = COCO(info["json"][split])
        names = sorted(img["file_name"] for img in coco.dataset["images"])
        assert sorted(os.listdir(os.path.join(sod, sd, f"{sd}-Image"))) == names
        assert sorted(os.listdir(os.path.join(sod, sd, f"{sd}-Mask"))) == [n[:-4] + ".png" for n in names]
        if split == "train":
            with open(os.path.join(sod, sd, "train_pair.lst")) as f:
                lines = f.read().splitlines()
            assert lines == [f"CarDD-TR-Image/{n} CarDD-TR-Mask/{n[:-4]}.png" for n in names]
            assert not os.path.exists(os.path.join(sod, sd, "test.lst"))
        else:
            with open(os.path.join(sod, sd, "test.lst")) as f:
                assert f.read().splitlines() == names
        for img in coco.dataset["images"]:
            with open(os.path.join(info["image_dirs"][split], img["file_name"]), "rb") as f1, open(
                os.path.join(sod, sd, f"{sd}-Image", img["file_name"]), "rb"
            ) as f2:
                assert f1.read() == f2.read()
            union = np.zeros((img["height"], img["width"]), np.uint8)
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
                rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], img["height"], img["width"]))
                union |= mask_utils.decode(rle)
            mask = np.array(Image.open(os.path.join(sod, sd, f"{sd}-Mask", img["file_name"][:-4] + ".png")))
            assert mask.dtype == np.uint8 and mask.ndim == 2
            assert set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask, union * 255)


def test_no_sod_no_undamaged(tmp_path):
    info = make_synthetic_cardd(str(tmp_path), num_images=(2, 1, 0), image_size=(160, 128), write_sod=False)
    assert info["sod_root"] is None and info["undamaged_dir"] is None
    assert not os.path.exists(tmp_path / "CarDD_SOD")
    assert COCO(info["json"]["test"]).getImgIds() == []
    assert len(COCO(info["json"]["train"]).getAnnIds()) >= 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_cardd(str(tmp_path), num_images=(1, 1, 1), image_size=(8, 8))
    with pytest.raises(ValueError, match="num_images"):
        make_synthetic_cardd(str(tmp_path), num_images=(1, 1))


def test_own_classes_plain_coco_layout_ids_from_zero(tmp_path):
    """make_synthetic_coco: custom names, every id from 0, the same pictures as the CarDD set of that seed."""
    from cardd_d2.data import validate_coco_json
    from cardd_d2.data.synthetic import make_synthetic_coco

    names = ["dent", "scrape", "crack", "window", "light", "tyre"]
    info = make_synthetic_coco(str(tmp_path / "own"), names, num_images=(3, 1, 2), image_size=(256, 192), seed=4)
    cardd = make_synthetic_cardd(str(tmp_path / "cardd"), num_images=(3, 1, 2), image_size=(256, 192), seed=4,
                                 write_sod=False)
    assert info["json"]["train"] == str(tmp_path / "own" / "annotations" / "train.json")
    train = json.load(open(info["json"]["train"]))
    assert [c["id"] for c in train["categories"]] == list(range(6))
    assert [c["name"] for c in train["categories"]] == names
    assert train["images"][0]["id"] == 0 and train["annotations"][0]["id"] == 0
    assert validate_coco_json(info["json"]["train"], info["image_dirs"]["train"]).ok
    ref = json.load(open(cardd["json"]["train"]))
    assert [a["category_id"] + 1 for a in train["annotations"]] == [a["category_id"] for a in ref["annotations"]]
    assert [a["segmentation"] for a in train["annotations"]] == [a["segmentation"] for a in ref["annotations"]]
    for own_im, ref_im in zip(train["images"], ref["images"]):
        own = open(os.path.join(info["image_dirs"]["train"], own_im["file_name"]), "rb").read()
        assert own == open(os.path.join(cardd["image_dirs"]["train"], ref_im["file_name"]), "rb").read()
    test = json.load(open(info["json"]["test"]))
    assert test["images"][0]["id"] == 4  # ids run on across the splits: train 0-2, val 3, test 4-5
    with pytest.raises(ValueError, match="distinct"):
        make_synthetic_coco(str(tmp_path / "x"), names + ["seventh"])
