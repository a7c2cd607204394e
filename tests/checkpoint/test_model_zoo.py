"""mmdet://<file name> starting checkpoints: URL, offline error, hash check, one-time conversion, loading."""
import io
import os
import shutil
import urllib.error

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from cardd_d2.checkpoint import model_zoo
from cardd_d2.checkpoint.model_zoo import MmdetZooError, mmdet_cache_dir, mmdet_checkpoint_url
from cardd_d2.engine import setup_cfg
from mmdet_names import sha256_prefix, to_mmdet_checkpoint
from tiny_config import config_path

# Published URLs, copied from mmdetection 2.25's configs/<family>/README.md.
PUBLISHED = {
    "mask_rcnn_r50_fpn_2x_coco_bbox_mAP-0.392__segm_mAP-0.354_20200505_003907-3e542a40":
        "https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r50_fpn_2x_coco/"
        "mask_rcnn_r50_fpn_2x_coco_bbox_mAP-0.392__segm_mAP-0.354_20200505_003907-3e542a40.pth",
    "mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7":
        "https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r101_fpn_2x_coco/"
        "mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7.pth",
    "cascade_mask_rcnn_r50_fpn_1x_coco_20200203-9d4dcb24":
        "https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco/"
        "cascade_mask_rcnn_r50_fpn_1x_coco_20200203-9d4dcb24.pth",
    "cascade_mask_rcnn_r101_fpn_1x_coco_20200203-befdf6ee":
        "https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/cascade_mask_rcnn_r101_fpn_1x_coco/"
        "cascade_mask_rcnn_r101_fpn_1x_coco_20200203-befdf6ee.pth",
    "mask_rcnn_r50_fpn_r4_gcb_c3-c5_1x_coco_20200204-17235656":
        "https://download.openmmlab.com/mmdetection/v2.0/gcnet/mask_rcnn_r50_fpn_r4_gcb_c3-c5_1x_coco/"
        "mask_rcnn_r50_fpn_r4_gcb_c3-c5_1x_coco_20200204-17235656.pth",
    "mask_rcnn_r101_fpn_r4_gcb_c3-c5_1x_coco_20200206-af22dc9d":
        "https://download.openmmlab.com/mmdetection/v2.0/gcnet/mask_rcnn_r101_fpn_r4_gcb_c3-c5_1x_coco/"
        "mask_rcnn_r101_fpn_r4_gcb_c3-c5_1x_coco_20200206-af22dc9d.pth",
    "htc_r50_fpn_20e_coco_20200319-fe28c577":
        "https://download.openmmlab.com/mmdetection/v2.0/htc/htc_r50_fpn_20e_coco/htc_r50_fpn_20e_coco_20200319-fe28c577.pth",
    "htc_r101_fpn_20e_coco_20200317-9b41b48f":
        "https://download.openmmlab.com/mmdetection/v2.0/htc/htc_r101_fpn_20e_coco/htc_r101_fpn_20e_coco_20200317-9b41b48f.pth",
    "mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco_20200203-4d9ad43b":
        "https://download.openmmlab.com/mmdetection/v2.0/dcn/mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco/"
        "mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco_20200203-4d9ad43b.pth",
    "mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco_20200216-a71f5bce":
        "https://download.openmmlab.com/mmdetection/v2.0/dcn/mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco/"
        "mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco_20200216-a71f5bce.pth",
}

NARROW = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.FPN.OUT_CHANNELS", "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16", "MODEL.DEVICE", "cpu",
]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_url_is_derived_from_the_file_name(name):
    assert mmdet_checkpoint_url("mmdet://" + name) == PUBLISHED[name]
    assert mmdet_checkpoint_url(name + ".pth") == PUBLISHED[name]


def test_names_that_are_not_mmdet_checkpoints_are_rejected():
    with pytest.raises(MmdetZooError, match="not an mmdetection checkpoint file name"):
        mmdet_checkpoint_url("mmdet://model_final")
    with pytest.raises(MmdetZooError, match="no mmdetection model-zoo folder"):
        mmdet_checkpoint_url("mmdet://retinanet_r50_fpn_1x_coco_20200130-c2398f9e")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache and no network: any download attempt fails like an offline machine."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(model_zoo.request, "urlopen", offline)
    return calls


def test_offline_error_names_url_file_and_cache_path(cache):
    name = "mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco_20200216-a71f5bce"
    with pytest.raises(MmdetZooError) as e:
        PathManager.get_local_path("mmdet://" + name)
    msg = str(e.value)
    expected_path = os.path.join(mmdet_cache_dir(), name + ".pth")
    assert PUBLISHED[name] in msg and f"named {name}.pth" in msg and expected_path in msg
    assert cache == [PUBLISHED[name]]
    assert not os.path.exists(expected_path) and not os.path.exists(expected_path + ".part")


def _tiny_mask_rcnn():
    cfg = setup_cfg(config_path("CarDD/mask_rcnn_R_50_FPN.yaml"), NARROW + ["MODEL.ROI_HEADS.NUM_CLASSES", "80"])
    torch.manual_seed(0)
    return build_model(cfg)


def _mmdet_file(tmp_path, config="mask_rcnn_r50_fpn_1x_coco"):
    """A release-like mmdet checkpoint on disk and its mmdetection-style file stem (name + sha256 prefix)."""
    src = tmp_path / "mmdet.pth"
    torch.save(to_mmdet_checkpoint(_tiny_mask_rcnn()), src)
    return src, f"{config}_20991231-{sha256_prefix(src)}"


def _target_model():
    cfg = setup_cfg(config_path("CarDD/mask_rcnn_R_50_FPN.yaml"), NARROW)
    torch.manual_seed(1)
    return build_model(cfg)


def test_file_put_in_the_cache_is_checked_converted_once_and_loads(cache, tmp_path, monkeypatch):
    src, stem = _mmdet_file(tmp_path)
    os.makedirs(mmdet_cache_dir())
    shutil.copy(src, os.path.join(mmdet_cache_dir(), stem + ".pth"))

    model = _target_model()
    DetectionCheckpointer(model).load("mmdet://" + stem)
    assert cache == []  # no download attempted
    converted = os.path.join(mmdet_cache_dir(), "converted", stem + ".pth")
    assert os.path.isfile(converted)
    mm = torch.load(src)["state_dict"]
    own = model.state_dict()
    torch.testing.assert_close(own["backbone.bottom_up.res3.0.conv2.weight"], mm["backbone.layer2.0.conv2.weight"])
    torch.testing.assert_close(own["roi_heads.mask_head.mask_fcn1.weight"], mm["roi_head.mask_head.convs.0.conv.weight"])
    # the 80-class predictors do not fit 6 classes and keep their initialisation
    assert own["roi_heads.box_predictor.cls_score.weight"].shape[0] == 7

    def no_second_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(model_zoo, "convert_mmdet_checkpoint", no_second_conversion)
    assert PathManager.get_local_path("mmdet://" + stem) == converted


def test_download_is_checked_and_converted(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    src, stem = _mmdet_file(tmp_path, config="mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco")
    urls = []

    def serve(url, *args, **kwargs):
        urls.append(url)
        return io.BytesIO(open(src, "rb").read())

    monkeypatch.setattr(model_zoo.request, "urlopen", serve)
    local = PathManager.get_local_path(f"mmdet://{stem}")
    assert urls == [f"https://download.openmmlab.com/mmdetection/v2.0/dcn/mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco/{stem}.pth"]
    assert os.path.isfile(os.path.join(mmdet_cache_dir(), stem + ".pth"))
    assert torch.load(local)["__author__"] == "cardd-convert-mmdet"


def test_wrong_hash_in_the_cache_is_a_clear_error(cache, tmp_path):
    src, stem = _mmdet_file(tmp_path)
    wrong = stem[:-8] + ("0" * 8 if not stem.endswith("0" * 8) else "1" * 8)
    placed = os.path.join(mmdet_cache_dir(), wrong + ".pth")
    os.makedirs(mmdet_cache_dir())
    shutil.copy(src, placed)
    with pytest.raises(MmdetZooError) as e:
        PathManager.get_local_path("mmdet://" + wrong)
    msg = str(e.value)
    assert placed in msg and sha256_prefix(src) in msg and wrong[-8:] in msg and "Delete it" in msg
    assert os.path.isfile(placed)  # a file the user put there is not deleted
    assert not os.path.exists(os.path.join(mmdet_cache_dir(), "converted", wrong + ".pth"))


def test_wrong_hash_after_download_removes_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    src, stem = _mmdet_file(tmp_path)
    wrong = stem[:-8] + "deadbeef"
    monkeypatch.setattr(model_zoo.request, "urlopen", lambda url, *a, **k: io.BytesIO(open(src, "rb").read()))
    with pytest.raises(MmdetZooError, match="removed"):
        PathManager.get_local_path("mmdet://" + wrong)
    assert not os.path.exists(os.path.join(mmdet_cache_dir(), wrong + ".pth"))


def test_unconvertible_file_says_how_to_convert_by_hand(cache, tmp_path):
    src = tmp_path / "bad.pth"
    torch.save({"state_dict": {"backbone.unknown_layer.weight": torch.zeros(1)}}, src)
    stem = f"mask_rcnn_r50_fpn_1x_coco_20991231-{sha256_prefix(src)}"
    os.makedirs(mmdet_cache_dir())
    shutil.copy(src, os.path.join(mmdet_cache_dir(), stem + ".pth"))
    with pytest.raises(MmdetZooError) as e:
        PathManager.get_local_path("mmdet://" + stem)
    converted = os.path.join(mmdet_cache_dir(), "converted", stem + ".pth")
    assert "backbone.unknown_layer.weight" in str(e.value) and f"tools/convert_mmdet_to_d2.py" in str(e.value)
    assert converted in str(e.value) and not os.path.exists(converted)


def test_training_checkpointer_starts_from_mmdet_url(cache, tmp_path):
    from cardd_d2.checkpoint.checkpointer import TrainingCheckpointer

    src, stem = _mmdet_file(tmp_path)
    os.makedirs(mmdet_cache_dir())
    shutil.copy(src, os.path.join(mmdet_cache_dir(), stem + ".pth"))
    model = _target_model()
    TrainingCheckpointer(model, str(tmp_path / "out")).resume_or_load("mmdet://" + stem, resume=True)
    mm = torch.load(src)["state_dict"]
    torch.testing.assert_close(model.state_dict()["backbone.fpn_lateral2.weight"], mm["neck.lateral_convs.0.conv.weight"])
