"""Every paper config starts from the released config's mmdetection COCO checkpoint (load_from), with the input
settings those weights need, and a release-like checkpoint loads into it with only the documented differences.
The configs/CarDD/d2_zoo/ variants differ from the paper configs only in the start."""
import os
import re
import shutil

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from cardd_d2.checkpoint.model_zoo import mmdet_cache_dir, parse_mmdet_name
from cardd_d2.engine import setup_cfg
from mmdet_names import sha256_prefix, to_mmdet_checkpoint
from tiny_config import config_path

# config -> load_from of the released config (R-101 active, R-50 the commented alternative; DCN+ R-50 has none and
# starts from the DCN R-50 checkpoint; HTC R-50 uses the 20e file like the released R-101).
RELEASE_START = {
    "mask_rcnn_R_50_FPN": "mask_rcnn_r50_fpn_2x_coco_bbox_mAP-0.392__segm_mAP-0.354_20200505_003907-3e542a40",
    "mask_rcnn_R_101_FPN": "mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7",
    "cascade_mask_rcnn_R_50_FPN": "cascade_mask_rcnn_r50_fpn_1x_coco_20200203-9d4dcb24",
    "cascade_mask_rcnn_R_101_FPN": "cascade_mask_rcnn_r101_fpn_1x_coco_20200203-befdf6ee",
    "gcnet_R_50_FPN": "mask_rcnn_r50_fpn_r4_gcb_c3-c5_1x_coco_20200204-17235656",
    "gcnet_R_101_FPN": "mask_rcnn_r101_fpn_r4_gcb_c3-c5_1x_coco_20200206-af22dc9d",
    "htc_R_50_FPN": "htc_r50_fpn_20e_coco_20200319-fe28c577",
    "htc_R_101_FPN": "htc_r101_fpn_20e_coco_20200317-9b41b48f",
    "dcn_R_50_FPN": "mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco_20200203-4d9ad43b",
    "dcn_R_101_FPN": "mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco_20200216-a71f5bce",
    "dcn_plus_R_50_FPN": "mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco_20200203-4d9ad43b",
    "dcn_plus_R_101_FPN": "mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco_20200216-a71f5bce",
}
ABLATIONS = ["dcn_R_101_baseline", "dcn_R_101_focal", "dcn_R_101_multiscale", "dcn_R_101_multiscale_focal"]
MMDET_INPUT = {"MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53], "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
               "INPUT.FORMAT": "RGB", "MODEL.RESNETS.STRIDE_IN_1X1": False}
START_KEYS = ("MODEL.WEIGHTS", "OUTPUT_DIR") + tuple(MMDET_INPUT)

NARROW = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16", "MODEL.HTC.SEMANTIC_CONV_DIM", "16", "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
]


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@pytest.mark.parametrize("name", sorted(RELEASE_START))
def test_paper_config_starts_from_the_release_checkpoint(name):
    cfg = setup_cfg(config_path(f"CarDD/{name}.yaml"))
    assert cfg.MODEL.WEIGHTS == "mmdet://" + RELEASE_START[name]
    for key, value in MMDET_INPUT.items():
        assert _get(cfg, key) == value, key


@pytest.mark.parametrize("name", ABLATIONS)
def test_table_ii_ablation_starts_like_dcn_plus_r101(name):
    cfg = setup_cfg(config_path(f"CarDD/ablation/{name}.yaml"))
    assert cfg.MODEL.WEIGHTS == "mmdet://" + RELEASE_START["dcn_plus_R_101_FPN"]
    assert cfg.INPUT.FORMAT == "RGB" and not cfg.MODEL.RESNETS.STRIDE_IN_1X1


@pytest.mark.parametrize("name", sorted(RELEASE_START))
def test_d2_zoo_variant_differs_only_in_the_start(name):
    paper = _flat(setup_cfg(config_path(f"CarDD/{name}.yaml")))
    zoo = _flat(setup_cfg(config_path(f"CarDD/d2_zoo/{name}.yaml")))
    assert {k for k in paper if paper[k] != zoo[k]} <= set(START_KEYS)
    assert zoo["MODEL.WEIGHTS"].startswith("detectron2://")
    d2 = _flat(get_cfg())  # detectron2's defaults are the MSRA model-zoo input settings
    for key in MMDET_INPUT:
        assert zoo[key] == d2[key], key
    assert zoo["OUTPUT_DIR"] == f"./output/d2_zoo/{name}"


class _Recorder(DetectionCheckpointer):
    def _log_incompatible_keys(self, incompatible):
        self.incompatible = incompatible


def _release_like_overrides(name):
    """What the released COCO checkpoint has beyond the CarDD model: 80 classes; DCN+ starts from a DCN c3-c5 model;
    HTC's COCO models carry the semantic head."""
    ov = ["MODEL.ROI_HEADS.NUM_CLASSES", "80"]
    if name.startswith("dcn_plus"):
        ov += ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]"]
    if name.startswith("htc"):
        ov += ["MODEL.META_ARCHITECTURE", "HTCRCNN", "MODEL.HTC.WITH_SEMANTIC", "True"]
    return ov


# Keys of a CarDD model that a release checkpoint does not provide, and release keys a CarDD model does not use.
CLASS_LAYERS = r"roi_heads\.(box_predictor\.(\d+\.)?cls_score|mask_head\.(\d+\.)?predictor)\.(weight|bias)"
CLASS_SPECIFIC_BOX_REG = r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)"  # cascade regressors are agnostic
RES2_OFFSETS = r"backbone\.bottom_up\.res2\.\d+\.conv2_offset\.(weight|bias)"
SEMANTIC_HEAD = r"roi_heads\.semantic_head\..*"


@pytest.mark.parametrize("name", sorted(RELEASE_START))
def test_release_like_checkpoint_loads_with_only_the_documented_differences(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    config = config_path(f"CarDD/{name}.yaml")
    torch.manual_seed(0)
    release = build_model(setup_cfg(config, NARROW + _release_like_overrides(name)))
    src = tmp_path / "release.pth"
    torch.save(to_mmdet_checkpoint(release), src)
    stem = f"{parse_mmdet_name(RELEASE_START[name])[1]}_test-{sha256_prefix(src)}"
    os.makedirs(mmdet_cache_dir())
    shutil.copy(src, os.path.join(mmdet_cache_dir(), stem + ".pth"))

    torch.manual_seed(1)
    model = build_model(setup_cfg(config, NARROW))
    ckpt = _Recorder(model)
    ckpt.load("mmdet://" + stem)
    inc = ckpt.incompatible

    missing_expected = {k for k in model.state_dict() if re.fullmatch(CLASS_LAYERS, k)
                        or re.fullmatch(CLASS_SPECIFIC_BOX_REG, k)
                        or (name.startswith("dcn_plus") and re.fullmatch(RES2_OFFSETS, k))}
    assert missing_expected and set(inc.missing_keys) == missing_expected
    assert {k for k, _, _ in inc.incorrect_shapes} == missing_expected - {
        k for k in missing_expected if re.fullmatch(RES2_OFFSETS, k)}
    converted = torch.load(PathManager.get_local_path("mmdet://" + stem))["model"]
    # HTC: the release's semantic head is converted, and dropped on load by the model without the semantic branch
    assert any(re.fullmatch(SEMANTIC_HEAD, k) for k in converted) is name.startswith("htc")
    assert not inc.unexpected_keys
    own, rel = model.state_dict(), release.state_dict()
    loaded = [k for k in own if k not in missing_expected]
    assert loaded and all(torch.equal(own[k], rel[k]) for k in loaded)

