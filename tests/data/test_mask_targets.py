"""mmdetection's mask targets in the paper configs: polygon -> full-image bitmap at the original size (before the
resize) -> RoIAlign crop to 28x28 -> >= 0.5, checked on a hand-computed case."""
import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, BoxMode, PolygonMasks
from PIL import Image

from cardd_d2.data.mapper import CarDDDatasetMapper
from cardd_d2.engine import setup_cfg
from tiny_config import config_path

# A 40x60 image with one rectangle whose right edge is fractional: x in [10, 19.6], y in [10, 30].
POLYGON = [[10.0, 10.0, 19.6, 10.0, 19.6, 30.0, 10.0, 30.0]]
PROPOSAL = torch.tensor([[10.0, 10.0, 30.0, 30.0]])


def _dataset_dict(tmp_path):
    path = str(tmp_path / "img.png")
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)
    ann = {"bbox": [10.0, 10.0, 9.6, 20.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
           "segmentation": POLYGON, "iscrowd": 0}
    return {"file_name": path, "height": 40, "width": 60, "image_id": 0, "annotations": [ann]}


def _cfg(name, *opts):
    # Training resize to the image's own size (scale 1) and no flip, so the case stays hand-computable.
    return setup_cfg(config_path(name), ["INPUT.MIN_SIZE_TRAIN", "(40,)", "INPUT.MAX_SIZE_TRAIN", "60",
                                         "INPUT.RANDOM_FLIP", "none", "MODEL.DEVICE", "cpu"] + list(opts))


def _hand_computed_target():
    """pycocotools (mmdet's _poly2mask) fills pixel columns 10..19 and rows 10..29 of the full image. RoIAlign
    (aligned, 1 sample per bin since the box is 20 px for 28 bins) samples column i of the target at
    x = 10 + (i + 0.5) * 20 / 28 - 0.5, whose bilinear value is 1 up to x = 19, falls linearly to 0 at x = 20 and
    is >= 0.5 while x <= 19.5, i.e. for i <= 13; every row samples inside rows 9.86..29.14 -> all >= 0.5."""
    target = np.zeros((28, 28), bool)
    target[:, :14] = True
    return target


def test_paper_config_mask_targets_match_the_hand_computed_case(tmp_path):
    cfg = _cfg("CarDD/mask_rcnn_R_50_FPN.yaml")
    assert (cfg.INPUT.MASK_FORMAT, cfg.INPUT.RASTERIZE_BEFORE_RESIZE) == ("bitmask", True)
    inst = CarDDDatasetMapper(cfg, is_train=True)(_dataset_dict(tmp_path))["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (1, 40, 60)
    cols = torch.nonzero(inst.gt_masks.tensor[0].any(0)).flatten()
    rows = torch.nonzero(inst.gt_masks.tensor[0].any(1)).flatten()
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (10, 19, 10, 29)
    target = inst.gt_masks.crop_and_resize(PROPOSAL, 28)[0].numpy()
    np.testing.assert_array_equal(target, _hand_computed_target())


def test_polygon_targets_of_the_default_differ_on_this_case(tmp_path):
    """detectron2's default (polygons rasterised inside the box) gives 13 columns here, not mmdetection's 14."""
    cfg = _cfg("CarDD/quickstart/mask_rcnn_R_50_narrow_FPN_scratch.yaml")
    assert cfg.INPUT.MASK_FORMAT == "polygon" and not cfg.INPUT.RASTERIZE_BEFORE_RESIZE
    inst = CarDDDatasetMapper(cfg, is_train=True)(_dataset_dict(tmp_path))["instances"]
    assert isinstance(inst.gt_masks, PolygonMasks)
    target = inst.gt_masks.crop_and_resize(PROPOSAL, 28)[0].numpy()
    assert target[0].sum() == 13 and not np.array_equal(target, _hand_computed_target())


def test_bitmap_follows_the_resize_with_nearest_and_the_flip(tmp_path):
    """Downscale 40x60 -> 20x30 with cv2 nearest (source pixel 2j) and flip: columns 10..19 -> 5..9 -> 20..24."""
    cfg = _cfg("CarDD/mask_rcnn_R_50_FPN.yaml", "INPUT.MIN_SIZE_TRAIN", "(20,)", "INPUT.MAX_SIZE_TRAIN", "30",
               "INPUT.RANDOM_FLIP", "horizontal")
    mapper = CarDDDatasetMapper(cfg, is_train=True)
    mapper.augmentations.augs[-1].prob = 1.0  # always flip
    inst = mapper(_dataset_dict(tmp_path))["instances"]
    m = inst.gt_masks.tensor[0]
    assert m.shape == (20, 30)
    expected = np.zeros((20, 30), bool)
    expected[5:15, 20:25] = True  # rows 10..29 -> 5..14 (source rows 10, 12, .., 28)
    np.testing.assert_array_equal(m.numpy(), expected)


def test_rasterize_needs_bitmask_format():
    cfg = _cfg("CarDD/mask_rcnn_R_50_FPN.yaml", "INPUT.MASK_FORMAT", "polygon")
    with pytest.raises(ValueError, match="RASTERIZE_BEFORE_RESIZE.*MASK_FORMAT 'bitmask'"):
        CarDDDatasetMapper(cfg, is_train=True)
