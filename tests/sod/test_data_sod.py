"""SOD data: DUTS-style reading, per-model preprocessing, bad inputs, COCO -> SOD conversion, config loading."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from cardd_sod.data import (CarDDSODDataset, coco_root_to_sod, coco_to_sod, coco_to_sod_classwise, load_mask,
                            read_sod_split)
from cardd_sod.data.layout import sod_split_dirs as split_dirs
from cardd_sod.models import get_sod_spec


def _pp(model):
    return get_sod_spec(model).preprocess


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    from cardd_d2.data.synthetic import make_synthetic_cardd
    return make_synthetic_cardd(str(tmp_path_factory.mktemp("sod_syn")), num_images=(6, 3, 3), image_size=(160, 120),
                                seed=1)


def _num_images(json_path):
    with open(json_path) as f:
        return len(json.load(f)["images"])


def test_read_splits_match_generator(syn):
    tr = read_sod_split(syn["sod_root"], "TR")
    te = read_sod_split(syn["sod_root"], "TE")
    assert len(tr) == _num_images(syn["json"]["train"]) == 6
    assert len(te) == _num_images(syn["json"]["test"]) == 3
    assert all(os.path.isfile(s.image) and os.path.isfile(s.mask) for s in tr + te)
    assert [s.name for s in tr] == sorted(s.name for s in tr)
    assert tr[0].mask.endswith(os.path.join("CarDD-TR-Mask", tr[0].name + ".png"))


def test_presets_shapes_and_normalisation(syn):
    root = syn["sod_root"]
    cs = CarDDSODDataset(root, "TE", _pp("csnet"))[0]
    assert cs["image"].shape == (3, 224, 224) and cs["mask"].shape == (1, 224, 224)
    assert cs["orig_size"] == (120, 160)
    pn_ds = CarDDSODDataset(root, "TE", _pp("poolnet"))
    pn = pn_ds[0]
    assert pn["image"].shape == (3, 120, 160)
    raw = cv2.imread(pn_ds.samples[0].image, cv2.IMREAD_COLOR).astype(np.float32)  # BGR
    expected = raw[5, 7] - np.array([104.00699, 116.66877, 122.67892], np.float32)
    np.testing.assert_allclose(pn["image"][:, 5, 7].numpy(), expected, rtol=1e-5, atol=1e-4)
    assert set(np.unique(pn["mask"].numpy())) <= {0.0, 1.0}
    u2 = CarDDSODDataset(root, "TR", _pp("u2net"), train=True)[0]
    assert u2["image"].shape == (3, 288, 288)
    assert CarDDSODDataset(root, "TE", _pp("u2netp"))[0]["image"].shape == (3, 320, 320)
    with pytest.warns(UserWarning, match="no edge map"):  # this synthetic layout has no edge maps
        sk = CarDDSODDataset(root, "TR", _pp("sgl_krn"), train=True)[1]
    assert "edge" in sk and sk["edge"].shape == sk["mask"].shape and sk["edge"].sum() > 0


def test_augmentation_is_a_function_of_seed_epoch_index(syn):
    ds = CarDDSODDataset(syn["sod_root"], "TR", _pp("u2net"), train=True, seed=3)
    a = ds[2]["image"]
    assert (ds[2]["image"] == a).all()
    diffs = []
    for e in range(1, 6):
        ds.set_epoch(e)
        diffs.append(not (ds[2]["image"] == a).all())
    assert any(diffs)


def _copy_split(syn, tmp_path):
    root = str(tmp_path / "sod")
    shutil.copytree(syn["sod_root"], root)
    return root, read_sod_split(root, "TE")


def test_bad_inputs_name_the_file(syn, tmp_path):
    root, samples = _copy_split(syn, tmp_path)
    s0, s1, s2 = samples
    os.remove(s0.mask)
    with pytest.raises(FileNotFoundError, match=s0.name):
        read_sod_split(root, "TE")
    assert read_sod_split(root, "TE", require_masks=False)[0].mask is None
    cv2.imwrite(s0.mask, np.zeros((50, 60), np.uint8))  # wrong size
    with pytest.raises(ValueError, match="differs.*" + s0.name):
        CarDDSODDataset(root, "TE", _pp("poolnet"))[0]
    grey = np.zeros((120, 160), np.uint8)
    grey[10:40, 10:40] = 200
    grey[40:50, 10:40] = 90
    cv2.imwrite(s0.mask, grey)
    with pytest.warns(UserWarning, match="binarising"):
        m = load_mask(s0.mask)
    assert set(np.unique(m)) == {0, 255} and m[45, 20] == 0 and m[20, 20] == 255
    with pytest.raises(ValueError, match="not binary"):
        load_mask(s0.mask, strict=True)
    colour = np.zeros((120, 160, 3), np.uint8)
    colour[..., 2] = 255
    cv2.imwrite(s1.mask, colour)
    with pytest.raises(ValueError, match="colour"):
        load_mask(s1.mask)
    with open(s2.image, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(ValueError, match="unreadable image.*" + os.path.basename(s2.image)):
        CarDDSODDataset(root, "TE", _pp("poolnet"))[2]
    with open(split_dirs(root, "TE")["test_list"], "a") as f:
        f.write("999999.jpg\n")
    with pytest.raises(FileNotFoundError, match="999999.jpg"):
        read_sod_split(root, "TE")


def test_coco_to_sod_reproduces_generator_layout(syn, tmp_path):
    out = str(tmp_path / "conv")
    res = coco_root_to_sod(syn["coco_root"], out)
    from pycocotools.coco import COCO
    from cardd_sod.data.instance_edges import instance_outline_edges
    cocos = {sp: COCO(syn["json"][name]) for sp, name in (("TR", "train"), ("VAL", "val"), ("TE", "test"))}
    for sp in ("TR", "VAL", "TE"):
        mine, ref = split_dirs(out, sp), split_dirs(syn["sod_root"], sp)
        assert res[sp]["num_images"] == len(os.listdir(ref["mask"]))
        for f in sorted(os.listdir(ref["mask"])):
            a = cv2.imread(os.path.join(mine["mask"], f), cv2.IMREAD_GRAYSCALE)
            b = cv2.imread(os.path.join(ref["mask"], f), cv2.IMREAD_GRAYSCALE)
            assert np.array_equal(a, b), f
            e = cv2.imread(os.path.join(mine["edge"], f), cv2.IMREAD_GRAYSCALE)
            img = next(i for i in cocos[sp].dataset["images"] if i["file_name"].startswith(f[:-4] + "."))
            anns = cocos[sp].loadAnns(cocos[sp].getAnnIds(imgIds=[img["id"]]))
            assert np.array_equal(e, instance_outline_edges(anns, *b.shape)), f
        lst = "pair_list" if sp == "TR" else "test_list"
        with open(mine[lst]) as f1, open(ref[lst]) as f2:
            assert f1.read() == f2.read()
    assert len(read_sod_split(out, "TR")) == 6


def test_classwise_masks_activate_one_class(syn, tmp_path):
    from pycocotools.coco import COCO
    jp, dp = syn["json"]["train"], syn["image_dirs"]["train"]
    coco = COCO(jp)
    res = coco_to_sod_classwise(jp, dp, str(tmp_path / "cw"), "TR")
    assert len(res) == 6 and "glass_shatter" in res
    union_dir = split_dirs(syn["sod_root"], "TR")["mask"]
    for slug, info in res.items():
        cid = info["category_ids"][0]
        with_cls = {os.path.splitext(coco.imgs[a["image_id"]]["file_name"])[0]
                    for a in coco.loadAnns(coco.getAnnIds(catIds=[cid]))}
        assert set(info["names"]) == with_cls  # images without the class are dropped
        for n in info["names"]:
            m = cv2.imread(os.path.join(split_dirs(info["root"], "TR")["mask"], n + ".png"), 0)
            img_id = next(i for i, im in coco.imgs.items() if im["file_name"].startswith(n))
            exp = np.zeros_like(m)
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id], catIds=[cid])):
                exp[coco.annToMask(a) > 0] = 255
            assert np.array_equal(m, exp) and m.any()
            assert not (m & ~cv2.imread(os.path.join(union_dir, n + ".png"), 0)).any()
    keep = coco_to_sod(jp, dp, str(tmp_path / "keep"), "TR", category="dent", keep_empty=True)
    assert keep["num_images"] == 6 and keep["num_empty"] == 6 - res["dent"]["num_images"]
    with pytest.raises(KeyError, match="rust"):
        coco_to_sod(jp, dp, str(tmp_path / "x"), "TR", category="rust")


def test_dataset_needs_a_preprocess_spec(syn):
    with pytest.raises(TypeError, match="PreprocessSpec"):
        CarDDSODDataset(syn["sod_root"], "TE", "csnet")


def test_cardd_sod_import_does_not_import_detectron2():
    import subprocess
    import sys
    code = ("import sys, cardd_sod, cardd_sod.engine, cardd_sod.compare, cardd_sod.classwise; "
            "bad = [m for m in sys.modules if m.startswith('detectron2')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
