"""Input pipelines and optimiser groups as the released training code has them, against small hand-written
references of the released rules (CSNet prepare_data / train.py, SGL-KRN dataset_edge_augment)."""
import dataclasses

import cv2
import numpy as np
import pytest
import torch
from skimage import img_as_float
from skimage.transform import resize

from cardd_sod.config import setup_sod_cfg
from cardd_sod.data.preprocess import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD, draw_edge_crop, preprocess_sample
from cardd_sod.engine import SODTrainer
from cardd_sod.models import get_sod_spec


def _sample(h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 5: w // 2] = 255
    return img, mask


def _csnet_release(img, gt, size, crop=None, flip=None):
    """CSNet_training/utils/prepare_data.py: img_as_float, [train: cut rows/cols on the original, flip], skimage
    resize (reflect, no anti-aliasing) of image and GT, ImageNet mean/std."""
    img, gt = img_as_float(img), img_as_float(gt)
    if crop is not None:
        t, b, l, r = crop
        img, gt = img[t:-b, l:-r], gt[t:-b, l:-r]
    if flip == "lr":
        img, gt = np.fliplr(img), np.fliplr(gt)
    elif flip == "ud":
        img, gt = np.flipud(img), np.flipud(gt)
    img = resize(img, size, mode="reflect", anti_aliasing=False)
    gt = resize(gt, size, mode="reflect", anti_aliasing=False)
    img = (img - IMAGENET_MEAN) / IMAGENET_STD
    return img.transpose(2, 0, 1), gt[None]


# shrinking (anti-aliasing would blur) and enlarging (the border mode reaches into the image)
@pytest.mark.parametrize("seed,hw", [(0, (600, 700)), (1, (700, 500)), (2, (60, 80)), (3, (90, 70)), (4, (60, 80))])
def test_csnet_train_input_matches_the_release(seed, hw):
    pp = get_sod_spec("csnet").preprocess
    assert (pp.size, pp.skimage_mode, pp.anti_aliasing, pp.edge_crop) == ((224, 224), "reflect", False, 15)
    img, mask = _sample(*hw, seed=seed)
    ours_img, ours_mask, _ = preprocess_sample(pp, img, mask, None, np.random.default_rng(seed), train=True)
    draws = np.random.default_rng(seed)  # the same draws, in the pipeline's order
    crop = draw_edge_crop(draws, 15)
    flip = None
    if draws.random() < 0.5:
        flip = "lr" if draws.random() < 0.5 else "ud"
    ref_img, ref_mask = _csnet_release(img, mask, (224, 224), crop, flip)
    np.testing.assert_allclose(ours_img, ref_img, atol=3e-5)
    np.testing.assert_allclose(ours_mask, ref_mask, atol=1e-6)


def test_csnet_test_input_and_crop_ranges():
    pp = get_sod_spec("csnet").preprocess
    for hw in ((600, 700), (60, 80)):
        img, mask = _sample(*hw, seed=9)
        ours_img, _, _ = preprocess_sample(pp, img, mask, None, np.random.default_rng(0), train=False)
        np.testing.assert_allclose(ours_img, _csnet_release(img, mask, (224, 224))[0], atol=3e-5)
    rng = np.random.default_rng(1)
    draws = np.array([draw_edge_crop(rng, 15) for _ in range(3000)])
    for col, lo in ((0, 0), (2, 0), (1, 1), (3, 1)):  # top/left 0..14, bottom/right 1..15
        assert set(draws[:, col]) == set(range(lo, lo + 15))
    with pytest.raises(ValueError, match="too small"):
        preprocess_sample(pp, img[:20, :20], mask[:20, :20], None, np.random.default_rng(0), train=True)


def _krn_release(img_rgb, label, edge, angle):
    """dataset_edge_augment.py: BGR float32 minus the caffe mean, then random_rotate about (w/2, h/2) with
    cv2.warpAffine's defaults (bilinear, zero borders) on image, label / 255 and edge / 255."""
    x = img_rgb[:, :, ::-1].astype(np.float32)
    x -= np.array(CAFFE_BGR_MEAN)
    y, z = label.astype(np.float32) / 255.0, edge.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(x, m, (w, h)).transpose(2, 0, 1), cv2.warpAffine(y, m, (w, h)), cv2.warpAffine(z, m, (w, h))


def test_sgl_krn_rotation_after_mean_subtraction():
    spec = get_sod_spec("sgl_krn")
    assert spec.shuffle is False and spec.preprocess.rotate_deg == 25 and spec.preprocess.rotate_p == 0.5
    pp = dataclasses.replace(spec.preprocess, hflip=0.0, rotate_p=1.0)  # always rotate, no flip
    img, mask = _sample(h=60, w=80, seed=4)
    edge = (cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0).astype(np.uint8) * 255
    angles = []
    for seed in range(40):
        draws = np.random.default_rng(seed)
        assert draws.random() < 1.0
        angle = int(draws.integers(-25, 25))
        angles.append(angle)
        if abs(angle) < 10:
            continue
        ours = preprocess_sample(pp, img, mask, edge, np.random.default_rng(seed), train=True)
        ref_img, ref_mask, ref_edge = _krn_release(img, mask, edge, angle)
        np.testing.assert_allclose(ours[0], ref_img, atol=1e-4)
        np.testing.assert_allclose(ours[1][0], ref_mask, atol=1e-6)
        np.testing.assert_allclose(ours[2][0], ref_edge, atol=1e-6)
        assert np.all(ours[0][:, 0, 0] == 0)  # the border is the mean colour, i.e. 0 after the subtraction
        assert ((ours[2] > 0) & (ours[2] < 1)).any()  # soft edges: bce2d gives them weight 0, as released
    assert min(angles) >= -25 and max(angles) <= 24 and len(set(angles)) > 10


def test_csnet_optimiser_has_the_released_two_groups(tmp_path):
    cfg = setup_sod_cfg("configs/SOD/csnet.yaml", ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)])
    t = SODTrainer(cfg, progress=False)
    no_decay = {n for n, _ in t.model.named_parameters()
                if "stage" in n and ("conv1x1.bns" in n or "conv3x3_1.bns" in n) and n.endswith("weight")}
    assert no_decay and not any("conv3x3_2" in n for n in no_decay)
    by_id = {id(p): n for n, p in t.model.named_parameters()}
    groups = t.optimizer.param_groups
    assert len(groups) == 2 and all(g["betas"] == (0.9, 0.99) and g["lr"] == 1e-4 for g in groups)
    assert {by_id[id(p)] for p in groups[1]["params"]} == no_decay and groups[1]["weight_decay"] == 0.0
    assert len(groups[0]["params"]) + len(no_decay) == len(by_id) and groups[0]["weight_decay"] == 5e-3
    assert isinstance(t.optimizer, torch.optim.Adam)
