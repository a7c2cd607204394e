"""RangeResize (DCN+'s multi-scale training resize) and the CarDD augmentation builders."""
import numpy as np
import pytest
from detectron2.data import transforms as T
from PIL import Image

from cardd_d2 import get_cardd_cfg
from cardd_d2.data.transforms import RangeResize, build_cardd_test_augmentation, build_cardd_train_augmentation


def _image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def test_width_exact_height_in_range_aspect_not_kept():
    aug = RangeResize(1333, (640, 1200))
    img = _image(413, 1000)  # CarDD's smallest image
    np.random.seed(0)
    for _ in range(20):
        t = aug.get_transform(img)
        assert isinstance(t, T.ResizeTransform)
        assert t.new_w == 1333 and 640 <= t.new_h <= 1200
        assert t.interp == Image.BILINEAR
        out = t.apply_image(img)
        assert out.shape == (t.new_h, 1333, 3)


def test_boxes_and_polygons_follow_the_image():
    img = _image(50, 80)
    aug = RangeResize(160, (30, 40))
    np.random.seed(1)
    inp = T.AugInput(img, boxes=np.array([[10.0, 5.0, 40.0, 25.0]]))
    t = aug(inp)
    sy, sx = t.new_h / 50.0, 160 / 80.0
    np.testing.assert_allclose(inp.boxes, [[10 * sx, 5 * sy, 40 * sx, 25 * sy]], rtol=1e-6)
    poly = t.apply_polygons([np.array([[10.0, 5.0], [40.0, 5.0], [40.0, 25.0]])])[0]
    np.testing.assert_allclose(poly, [[10 * sx, 5 * sy], [40 * sx, 5 * sy], [40 * sx, 25 * sy]], rtol=1e-6)
    mask = np.zeros((50, 80), np.uint8)
    mask[5:25, 10:40] = 1
    assert t.apply_segmentation(mask).shape == (t.new_h, 160)


def test_height_distribution_is_uniform_over_the_inclusive_range():
    lo, hi, n = 640, 659, 20000  # 20 bins
    aug = RangeResize(1333, (lo, hi))
    np.random.seed(123)
    heights = np.array([aug.sample_height() for _ in range(n)])
    assert heights.min() == lo and heights.max() == hi
    counts = np.bincount(heights - lo, minlength=hi - lo + 1)
    assert len(counts) == hi - lo + 1
    expected = n / (hi - lo + 1)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 43.8  # 99.9 % quantile of chi-square with 19 dof
    # ends are hit with the full range too
    aug = RangeResize(1333, (640, 1200))
    full = np.array([aug.sample_height() for _ in range(20000)])
    assert full.min() == 640 and full.max() == 1200


@pytest.mark.parametrize("shape", [(413, 1000), (1000, 413), (768, 1024), (1500, 1500), (600, 2400)])
def test_keep_ratio_equals_resize_shortest_edge_range(shape):
    img = _image(*shape)
    ours = RangeResize(1333, (640, 1200), keep_ratio=True)
    d2 = T.ResizeShortestEdge((640, 1200), max_size=1333, sample_style="range")
    for seed in range(10):
        np.random.seed(seed)
        a = ours.get_transform(img)
        np.random.seed(seed)
        b = d2.get_transform(img)
        assert (a.new_h, a.new_w) == (b.new_h, b.new_w)
        assert max(a.new_h, a.new_w) <= 1333


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="height_range"):
        RangeResize(1333, (1200, 640))
    with pytest.raises(ValueError, match="width"):
        RangeResize(0, (640, 1200))


def test_train_augmentation_builders():
    cfg = get_cardd_cfg()
    augs = build_cardd_train_augmentation(cfg)
    assert [type(a) for a in augs] == [T.ResizeShortestEdge, T.RandomFlip]
    assert augs[0].short_edge_length == cfg.INPUT.MIN_SIZE_TRAIN and augs[0].max_size == cfg.INPUT.MAX_SIZE_TRAIN

    cfg.INPUT.RANGE_RESIZE.ENABLED = True
    augs = build_cardd_train_augmentation(cfg)
    assert [type(a) for a in augs] == [RangeResize, T.RandomFlip]
    assert augs[0].width == 1333 and augs[0].height_range == (640, 1200) and not augs[0].keep_ratio
    assert augs[1].horizontal and augs[1].prob == 0.5

    cfg.INPUT.RANDOM_FLIP = "none"
    assert [type(a) for a in build_cardd_train_augmentation(cfg)] == [RangeResize]
    cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        build_cardd_train_augmentation(cfg)


def test_test_augmentation_is_keep_ratio_800_1333_without_flip():
    cfg = get_cardd_cfg()
    cfg.INPUT.RANGE_RESIZE.ENABLED = True  # never affects test time
    (aug,) = build_cardd_test_augmentation(cfg)
    assert isinstance(aug, T.ResizeShortestEdge)
    t = aug.get_transform(_image(413, 1000))
    assert (t.new_h, t.new_w) == (551, 1333)  # 800/413 would make width 1937 > 1333, so long edge caps
