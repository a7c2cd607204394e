"""DCN / DCN+ / Table II configs: released values (the YAML is the recipe), and every config builds a model."""
import os

import pytest
import torch
from detectron2.modeling import build_model

from cardd_d2.engine import setup_cfg
from cardd_d2.modeling.roi_heads import CarDDStandardROIHeads, FocalFastRCNNOutputLayers

DCN_CONFIGS = ["CarDD/dcn_R_50_FPN.yaml", "CarDD/dcn_R_101_FPN.yaml"]
DCN_PLUS_CONFIGS = ["CarDD/dcn_plus_R_50_FPN.yaml", "CarDD/dcn_plus_R_101_FPN.yaml"]
ABLATION = {  # config -> (ROI heads, classifier loss, range resize)
    "CarDD/ablation/dcn_R_101_baseline.yaml": ("CarDDStandardROIHeads", "ce", False),
    "CarDD/ablation/dcn_R_101_multiscale.yaml": ("CarDDStandardROIHeads", "ce", True),
    "CarDD/ablation/dcn_R_101_focal.yaml": ("CarDDStandardROIHeads", "focal", False),
    "CarDD/ablation/dcn_R_101_multiscale_focal.yaml": ("CarDDStandardROIHeads", "focal", True),
}
ALL = DCN_CONFIGS + DCN_PLUS_CONFIGS + list(ABLATION)


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _load(name):
    return setup_cfg(os.path.join(CONFIGS, name), freeze=False)


def test_schedules_are_24_released_epochs():
    # mmdet drops no image: an epoch of the 2,816 training images is ceil(2816 / batch) iterations
    for name in ["CarDD/mask_rcnn_R_50_FPN.yaml", *DCN_CONFIGS, *DCN_PLUS_CONFIGS]:
        s = _load(name).SOLVER
        epoch = -(-2816 // s.IMS_PER_BATCH)
        assert (s.MAX_ITER, tuple(s.STEPS)) == (24 * epoch, (16 * epoch, 22 * epoch)), name
    assert _load("CarDD/mask_rcnn_R_50_FPN.yaml").SOLVER.MAX_ITER == 8448
    assert _load(DCN_CONFIGS[0]).SOLVER.MAX_ITER == 33792


@pytest.mark.parametrize("name", DCN_CONFIGS)
def test_dcn_released_values(name):
    cfg = _load(name)
    assert cfg.MODEL.BACKBONE.NAME == "build_cardd_resnet_fpn_backbone"
    assert cfg.MODEL.RESNETS.DEPTH == (101 if "R_101" in name else 50)
    assert list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) == [False, True, True, True]
    assert cfg.MODEL.RESNETS.DEFORM_MODULATED is False and cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS == 1
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.MODEL.ROI_HEADS.NAME == "CarDDStandardROIHeads" and cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE == "ce"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 6 and cfg.MODEL.MASK_ON
    assert not cfg.INPUT.RANGE_RESIZE.ENABLED
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS)) == (2, 0.0025, 33792, (22528, 30976))
    assert (s.WARMUP_METHOD, s.WARMUP_ITERS, s.WARMUP_FACTOR) == ("linear", 500, 0.001)
    assert (s.MOMENTUM, s.WEIGHT_DECAY, s.GAMMA) == (0.9, 1e-4, 0.1)


# The released DCN+ (DCN_plus_cfg.py) spelled out; the YAML is the only place the recipe is written in the package.
RELEASED_DCN_PLUS = {
    "MODEL.BACKBONE.NAME": "build_cardd_resnet_fpn_backbone",
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [True, True, True, True],
    "MODEL.RESNETS.DEFORM_MODULATED": False,
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": 1,
    "MODEL.ROI_HEADS.NAME": "CarDDStandardROIHeads",
    "MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE": "focal",
    "MODEL.ROI_BOX_HEAD.FOCAL_VARIANT": "mmdet_sigmoid",
    "MODEL.ROI_BOX_HEAD.FOCAL_ALPHA": 0.5,
    "MODEL.ROI_BOX_HEAD.FOCAL_GAMMA": 2.0,
    "INPUT.RANGE_RESIZE.ENABLED": True,
    "INPUT.RANGE_RESIZE.WIDTH": 1333,
    "INPUT.RANGE_RESIZE.HEIGHT_RANGE": (640, 1200),
    "INPUT.RANGE_RESIZE.KEEP_RATIO": False,
    "INPUT.RANDOM_FLIP": "horizontal",
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "SOLVER.IMS_PER_BATCH": 4,
    "SOLVER.BASE_LR": 0.005,
    "SOLVER.MAX_ITER": 16896,
    "SOLVER.STEPS": (11264, 15488),
    "SOLVER.CHECKPOINT_PERIOD": 704,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WEIGHT_DECAY": 1e-4,
    "SOLVER.GAMMA": 0.1,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.WARMUP_ITERS": 500,
    "SOLVER.WARMUP_FACTOR": 0.001,
}


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _assert_dcn_plus(cfg):
    for key, value in RELEASED_DCN_PLUS.items():
        node = _get(cfg, key)
        if isinstance(value, (list, tuple)):
            assert list(node) == list(value), key
        else:
            assert node == value, key


@pytest.mark.parametrize("name", DCN_PLUS_CONFIGS)
def test_dcn_plus_released_values(name):
    cfg = _load(name)
    _assert_dcn_plus(cfg)
    # the released numbers, spelled out
    assert list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) == [True] * 4 and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert (cfg.MODEL.ROI_BOX_HEAD.FOCAL_VARIANT, cfg.MODEL.ROI_BOX_HEAD.FOCAL_ALPHA,
            cfg.MODEL.ROI_BOX_HEAD.FOCAL_GAMMA) == ("mmdet_sigmoid", 0.5, 2.0)
    rr = cfg.INPUT.RANGE_RESIZE
    assert (rr.ENABLED, rr.WIDTH, tuple(rr.HEIGHT_RANGE), rr.KEEP_RATIO) == (True, 1333, (640, 1200), False)
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS)) == (4, 0.005, 16896, (11264, 15488))
    assert (s.WARMUP_ITERS, s.WARMUP_FACTOR) == (500, 0.001)
    assert cfg.MODEL.RESNETS.DEPTH == (101 if "R_101" in name else 50)


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_table_ii_rows_differ_exactly_in_their_ingredient():
    rows = {row: _flat(_load(f"CarDD/ablation/dcn_R_101_{row}.yaml"))
            for row in ("baseline", "multiscale", "focal", "multiscale_focal")}

    def diff(a, b):
        return {k for k in rows[a] if rows[a][k] != rows[b][k] and k != "OUTPUT_DIR"}

    assert diff("baseline", "multiscale") == {"INPUT.RANGE_RESIZE.ENABLED"}
    assert diff("baseline", "focal") == {"MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE"}
    assert diff("focal", "multiscale_focal") == {"INPUT.RANGE_RESIZE.ENABLED"}
    assert diff("multiscale", "multiscale_focal") == {"MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE"}
    _assert_dcn_plus(_load("CarDD/ablation/dcn_R_101_multiscale_focal.yaml"))


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_dcn_plus_head_loss_follows_cls_loss_type(loss, tiny_cfg):
    cfg = tiny_cfg("CarDD/dcn_plus_R_50_FPN.yaml", "MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", loss,
                   "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "16",
                   "MODEL.ROI_MASK_HEAD.CONV_DIM", "8")
    assert build_model(cfg).roi_heads.box_predictor.cls_loss_type == loss


@pytest.mark.parametrize("name", list(ABLATION))
def test_table_ii_ablation_values(name):
    cfg = _load(name)
    heads, loss, multiscale = ABLATION[name]
    assert cfg.MODEL.ROI_HEADS.NAME == heads
    assert cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE == loss
    assert cfg.INPUT.RANGE_RESIZE.ENABLED is multiscale
    assert cfg.MODEL.RESNETS.DEPTH == 101 and list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) == [True] * 4
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS)) == (4, 0.005, 16896, (11264, 15488))
    if loss == "focal":
        assert (cfg.MODEL.ROI_BOX_HEAD.FOCAL_ALPHA, cfg.MODEL.ROI_BOX_HEAD.FOCAL_GAMMA) == (0.5, 2.0)


def _deform_blocks(model):
    from cardd_d2.modeling.backbone.resnet import CarDDBottleneckBlock

    bottom_up = model.backbone.bottom_up
    out = {}
    for stage in ("res2", "res3", "res4", "res5"):
        blocks = list(getattr(bottom_up, stage).children())
        out[stage] = [isinstance(b, CarDDBottleneckBlock) and hasattr(b, "conv2_offset") for b in blocks]
    return out


@pytest.mark.parametrize("name", ALL)
def test_every_config_builds(name, tiny_cfg):
    cfg = tiny_cfg(name, "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "16",
                   "MODEL.ROI_MASK_HEAD.CONV_DIM", "8")
    model = build_model(cfg)
    heads = model.roi_heads
    if "plus" in name or "ablation" in name:
        assert isinstance(heads, CarDDStandardROIHeads)
        assert isinstance(heads.box_predictor, FocalFastRCNNOutputLayers)
        assert type(heads) is CarDDStandardROIHeads
        assert heads.box_predictor.cls_loss_type == cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE
    else:
        assert type(heads) is CarDDStandardROIHeads and heads.box_predictor.cls_loss_type == "ce"
    deform = _deform_blocks(model)
    expected_res2 = "plus" in name or "ablation" in name
    assert all(deform["res2"]) is expected_res2 and any(deform["res2"]) is expected_res2
    assert all(deform["res3"]) and all(deform["res4"]) and all(deform["res5"])
    assert len(deform["res4"]) == (23 if "R_101" in name else 6)
    # FREEZE_AT 2: stem and res2 (offset convs included) frozen, res3 trainable
    bu = model.backbone.bottom_up
    assert not any(p.requires_grad for p in bu.stem.parameters())
    assert not any(p.requires_grad for p in bu.res2.parameters())
    assert all(p.requires_grad for n, p in bu.res3.named_parameters() if "norm" not in n)


def test_dcn_plus_trains_one_step_with_focal_loss(tiny_cfg):
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = tiny_cfg("CarDD/dcn_plus_R_50_FPN.yaml", "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "16",
                   "MODEL.ROI_MASK_HEAD.CONV_DIM", "8")
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    inst = Instances((96, 128))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0]]))
    inst.gt_classes = torch.tensor([3])
    from detectron2.structures import PolygonMasks

    inst.gt_masks = PolygonMasks([[[10.0, 10.0, 60.0, 10.0, 60.0, 50.0, 10.0, 50.0]]])
    batch = [{"image": torch.randint(0, 255, (3, 96, 128)).float(), "instances": inst}]
    with EventStorage(0):
        losses = model(batch)
    assert set(losses) >= {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    total = sum(losses.values())
    total.backward()
    res3_offset = model.backbone.bottom_up.res3[0].conv2_offset.weight
    assert res3_offset.grad is not None and res3_offset.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": batch[0]["image"], "height": 96, "width": 128}])
    scores = out["instances"].scores
    assert ((scores >= 0) & (scores <= 1)).all()
