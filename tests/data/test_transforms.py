"""RangeResize (DCN+'s multi-scale training resize), the cv2 resize backend and the CarDD augmentation builders."""
import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from PIL import Image

from cardd_d2 import get_cardd_cfg
from cardd_d2.data.transforms import (
    CarDDResizeShortestEdge,
    CV2ResizeTransform,
    RangeResize,
    build_cardd_test_augmentation,
    build_cardd_train_augmentation,
)
from cardd_d2.engine import CarDDTrainer, setup_cfg
from tiny_config import config_path


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
    assert [type(a) for a in augs] == [CarDDResizeShortestEdge, T.RandomFlip] and augs[0].backend == "pil"
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


def _stripes(h=45, w=70):
    """Hand-made RGB image with 1-pixel stripes, a ramp and a 3-periodic pattern: shrinking it with PIL (which
    antialiases) and with cv2 bilinear (which does not) gives visibly different pixels."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x % 2) * 255, (y * 5) % 256, ((x + y) % 3) * 120], axis=-1).astype(np.uint8)


def _paper_cfg(name="mask_rcnn_R_50_FPN", *opts):
    return setup_cfg(config_path(f"CarDD/{name}.yaml"), [
        "INPUT.MIN_SIZE_TEST", "30", "INPUT.MAX_SIZE_TEST", "1000", "INPUT.MIN_SIZE_TRAIN", "(30,)",
        "INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.RANDOM_FLIP", "none", "MODEL.DEVICE", "cpu"] + list(opts))


def _apply(augs, img):
    aug_input = T.AugInput(img)
    tfm = T.AugmentationList(augs)(aug_input)
    return aug_input.image, tfm


@pytest.mark.parametrize("is_train", [True, False])
def test_paper_configs_resize_with_cv2_bilinear(is_train):
    cfg = _paper_cfg()
    assert cfg.INPUT.RESIZE_BACKEND == "cv2"
    img = _stripes()
    build = build_cardd_train_augmentation if is_train else build_cardd_test_augmentation
    out, tfm = _apply(build(cfg), img)
    assert out.shape == (30, 47, 3)  # 45x70 -> short edge 30, 70 * 30 / 45 = 46.7 -> 47
    np.testing.assert_array_equal(out, cv2.resize(img, (47, 30), interpolation=cv2.INTER_LINEAR))
    pil = np.asarray(Image.fromarray(img).resize((47, 30), Image.BILINEAR))
    assert np.abs(out.astype(int) - pil).max() > 50  # what the PIL backend would have produced differs
    mask = (_stripes()[:, :, 0] > 0).astype(np.uint8)
    np.testing.assert_array_equal(tfm.apply_segmentation(mask),
                                  cv2.resize(mask, (47, 30), interpolation=cv2.INTER_NEAREST))
    boxes = tfm.apply_box(np.array([[0.0, 0.0, 70.0, 45.0]]))
    np.testing.assert_allclose(boxes, [[0, 0, 47, 30]])


def test_pil_backend_is_detectron2s_resize_and_unknown_backend_fails():
    cfg = get_cardd_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 30
    out, tfm = _apply(build_cardd_test_augmentation(cfg), _stripes())
    assert not isinstance(tfm.transforms[0], CV2ResizeTransform)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(_stripes()).resize((47, 30), Image.BILINEAR)))
    cfg.INPUT.RESIZE_BACKEND = "opencv"
    with pytest.raises(ValueError, match="RESIZE_BACKEND.*'opencv'"):
        build_cardd_test_augmentation(cfg)


def test_single_channel_and_inverse_keep_cv2():
    t = CV2ResizeTransform(45, 70, 30, 47, Image.BILINEAR)
    gray = _stripes()[:, :, :1]
    assert t.apply_image(gray).shape == (30, 47, 1)
    inv = t.inverse()
    assert isinstance(inv, CV2ResizeTransform) and (inv.h, inv.w, inv.new_h, inv.new_w) == (30, 47, 45, 70)


def test_dcn_plus_range_resize_keeps_pil_as_released_test_resize_is_cv2():
    cfg = _paper_cfg("dcn_plus_R_50_FPN", "INPUT.RANGE_RESIZE.WIDTH", "60", "INPUT.RANGE_RESIZE.HEIGHT_RANGE", "(30, 40)")
    (train,) = build_cardd_train_augmentation(cfg)
    t = train.get_transform(_stripes())
    assert type(t) is T.ResizeTransform  # the released DCN+ range resize asks for the 'pillow' backend
    _, tfm = _apply(build_cardd_test_augmentation(cfg), _stripes())
    assert isinstance(tfm.transforms[0], CV2ResizeTransform)


def test_trainer_test_loader_feeds_cv2_resized_images(tmp_path):
    img = _stripes()
    path = str(tmp_path / "stripes.png")
    Image.fromarray(img).save(path)
    name = "zoo_resize_backend_test"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": path, "height": 45, "width": 70, "image_id": 0}])
    cfg = _paper_cfg()
    (batch,) = [b for b, _ in zip(CarDDTrainer.build_test_loader(cfg, name), range(1))]
    expected = torch.as_tensor(cv2.resize(img, (47, 30), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
    assert torch.equal(batch[0]["image"], expected)  # paper configs read RGB, as the mmdetection weights expect


def test_inference_predictor_uses_the_configs_test_resize():
    from cardd_d2.assessment.predictor import build_predictor

    cfg = _paper_cfg("mask_rcnn_R_50_FPN", "MODEL.WEIGHTS", "", "MODEL.CLASS_NAMES", str(["a"] * 6),
                     "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64")
    aug = build_predictor(cfg).aug
    assert isinstance(aug, CarDDResizeShortestEdge) and aug.backend == "cv2"
    assert isinstance(aug.get_transform(_stripes()), CV2ResizeTransform)
