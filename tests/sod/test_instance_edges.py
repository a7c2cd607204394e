"""SGL-KRN edge maps: instance polygon outlines as the released data generator draws them (hand-made polygons),
written by coco_to_sod as CarDD-XX-Edge and read by the SGL-KRN dataset."""
import json
import os

import cv2
import numpy as np
import pytest

from cardd_sod.data.instance_edges import instance_outline_edges
from cardd_sod.models import get_sod_spec


def _picture(rows):
    return np.array([[255 if c == "X" else 0 for c in r] for r in rows], np.uint8)


def test_sloped_triangle_floor_and_ceil_points():
    # side (1,1)->(5,3): along x, y = 1, 1.5, 2, 2.5, 3 -> floor and ceil rows; along y, x = 1, 3, 5;
    # (5,3)->(1,3) horizontal; (1,3)->(1,1) vertical
    edge = instance_outline_edges([{"segmentation": [[1, 1, 5, 3, 1, 3]]}], 6, 8)
    assert np.array_equal(edge, _picture([
        "........",
        ".XX.....",
        ".XXXX...",
        ".XXXXX..",
        "........",
        "........",
    ]))


def test_only_the_first_polygon_and_walk_limits():
    # an axis-aligned rectangle touching the right border (x = 7 = width - 1): the top side walks left to right
    # and stops before column 7, the right side (walked along y) still reaches row 1; the second polygon is ignored
    edge = instance_outline_edges([{"segmentation": [[1, 1, 7, 1, 7, 4, 1, 4], [3, 5, 4, 5, 4, 5]]}], 6, 8)
    assert np.array_equal(edge, _picture([
        "........",
        ".XXXXXXX",
        ".X.....X",
        ".X.....X",
        ".XXXXXXX",
        "........",
    ]))
    top_only = instance_outline_edges([{"segmentation": [[1, 1, 7, 1]]}], 6, 8)  # a 2-point polygon: both walks
    assert top_only[1].tolist() == [0, 255, 255, 255, 255, 255, 255, 255]  # right-to-left walk reaches column 7


def test_negative_coordinates_wrap_like_numpy_indexing():
    # side (2.4, 0.2)->(3, 1.4), slope 2: the x walk starts at column round(2.4) = 2 where y = -0.6, so rows
    # floor(-0.6) = -1 (the last row, as the released generator's numpy indexing wraps) and ceil(-0.6) = 0
    edge = instance_outline_edges([{"segmentation": [[2.4, 0.2, 3.0, 1.4]]}], 10, 8)
    assert np.array_equal(edge, _picture(["..XX....", "..XX....", "...X...."] + ["........"] * 6 + ["..X....."]))
    # y = -15.8 < -height at column 2: that write fails in the release and is skipped (with its ceil partner)
    far = instance_outline_edges([{"segmentation": [[2.4, 0.2, 2.5, 4.2]]}], 6, 8)
    assert np.array_equal(far, _picture(["..XX...."] * 5 + ["........"]))


def test_instances_without_polygons_and_union():
    rle = {"segmentation": {"size": [6, 8], "counts": "abc"}, "iscrowd": 1}
    empty = {"segmentation": []}
    a = {"segmentation": [[1, 1, 5, 3, 1, 3]]}
    b = {"segmentation": [[1, 1, 7, 1, 7, 4, 1, 4]]}
    assert not instance_outline_edges([rle, empty], 6, 8).any()
    both = instance_outline_edges([a, rle, b], 6, 8)
    assert np.array_equal(both, np.maximum(instance_outline_edges([a], 6, 8), instance_outline_edges([b], 6, 8)))


def test_coco_to_sod_writes_outline_edges_and_sgl_krn_reads_them(tmp_path):
    from cardd_sod.data import CarDDSODDataset, coco_to_sod
    from cardd_sod.data.layout import sod_split_dirs
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "a.jpg"), np.full((6, 8, 3), 128, np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 8}],
            "categories": [{"id": 1, "name": "dent"}, {"id": 2, "name": "scratch"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [1, 1, 4, 2],
                 "segmentation": [[1, 1, 5, 3, 1, 3]]},
                {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 18.0, "bbox": [1, 1, 6, 3],
                 "segmentation": [[1, 1, 7, 1, 7, 4, 1, 4]]}]}
    jp = tmp_path / "inst.json"
    jp.write_text(json.dumps(coco))
    out = str(tmp_path / "sod")
    coco_to_sod(str(jp), str(img_dir), out, "TR")
    d = sod_split_dirs(out, "TR")
    written = cv2.imread(os.path.join(d["edge"], "a.png"), cv2.IMREAD_UNCHANGED)
    expect = instance_outline_edges(coco["annotations"], 6, 8)
    assert written.shape == (6, 8) and np.array_equal(written, expect)
    # class-wise: only the dent's outline
    coco_to_sod(str(jp), str(img_dir), str(tmp_path / "dent"), "TR", category="dent")
    dent = cv2.imread(os.path.join(sod_split_dirs(str(tmp_path / "dent"), "TR")["edge"], "a.png"), 0)
    assert np.array_equal(dent, instance_outline_edges(coco["annotations"][:1], 6, 8))
    # SGL-KRN training reads the file (no augmentation at test time): edge target == written map / 255
    item = CarDDSODDataset(out, "TR", get_sod_spec("sgl_krn").preprocess, train=False)[0]
    assert np.array_equal(item["edge"][0].numpy(), (expect > 0).astype(np.float32))
    os.remove(os.path.join(d["edge"], "a.png"))
    with pytest.warns(UserWarning, match=r"1 of 1 training images have no edge map in .*CarDD-TR-Edge \(e.g. a\)"):
        CarDDSODDataset(out, "TR", get_sod_spec("sgl_krn").preprocess, train=True)
