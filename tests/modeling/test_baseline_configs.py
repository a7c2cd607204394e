"""Paper-baseline configs (Cascade Mask R-CNN, GCNet, HTC, detectron2's cascade): released values, model structure,
and a few training iterations + inference + CarDD evaluation on synthetic data."""
import os
import uuid

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from cardd_d2.engine import setup_cfg

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")

# config -> (ROI heads, depth, images per batch, lr, max iter, steps): 24 epochs of 2,816 images, steps after 16 / 22.
RELEASED = {
    "CarDD/cascade_mask_rcnn_R_50_FPN.yaml": ("MMDetCascadeROIHeads", 50, 4, 0.005, 16896, (11264, 15488)),
    "CarDD/cascade_mask_rcnn_R_101_FPN.yaml": ("MMDetCascadeROIHeads", 101, 4, 0.005, 16896, (11264, 15488)),
    "CarDD/gcnet_R_50_FPN.yaml": (None, 50, 4, 0.005, 16896, (11264, 15488)),
    "CarDD/gcnet_R_101_FPN.yaml": (None, 101, 4, 0.005, 16896, (11264, 15488)),
    "CarDD/htc_R_50_FPN.yaml": ("HTCROIHeads", 50, 2, 0.0025, 33792, (22528, 30976)),
    "CarDD/htc_R_101_FPN.yaml": ("HTCROIHeads", 101, 2, 0.0025, 33792, (22528, 30976)),
    "CarDD/cascade_rcnn_d2_R_50_FPN.yaml": ("CascadeROIHeads", 50, 4, 0.005, 16896, (11264, 15488)),
}
CASCADES = [n for n, v in RELEASED.items() if v[0] in ("MMDetCascadeROIHeads", "HTCROIHeads")]
# Small network for the end-to-end runs (R-18 FPN, narrow heads): the logic under test is the ROI heads'.
SMALL_NET = [
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
]


def _load(name):
    return setup_cfg(os.path.join(CONFIGS, name), freeze=False)


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_values(name):
    cfg = _load(name)
    heads, depth, batch, lr, max_iter, steps = RELEASED[name]
    if heads is not None:
        assert cfg.MODEL.ROI_HEADS.NAME == heads
    assert cfg.MODEL.RESNETS.DEPTH == depth
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 6 and cfg.MODEL.MASK_ON
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS)) == (batch, lr, max_iter, steps)
    assert max_iter == 2816 // batch * 24 and steps == (2816 // batch * 16, 2816 // batch * 22)
    assert (s.WARMUP_METHOD, s.WARMUP_ITERS, s.WARMUP_FACTOR) == ("linear", 500, 0.001)
    assert (s.MOMENTUM, s.WEIGHT_DECAY, s.GAMMA) == (0.9, 1e-4, 0.1)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333)
    if "cascade" in name or "htc" in name:
        assert cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
        assert tuple(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS) == (0.5, 0.6, 0.7)


@pytest.mark.parametrize("name", CASCADES)
def test_mmdet_cascade_values(name):
    cfg = _load(name)
    assert tuple(cfg.MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS) == (1.0, 0.5, 0.25)
    stds = [tuple(1.0 / w for w in ws) for ws in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS]
    expected = [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
    for got, exp in zip(stds, expected):
        assert got == pytest.approx(exp, rel=1e-9)
    assert (cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION) == (512, 0.25)
    assert cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT
    assert cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA == 1.0
    assert cfg.MODEL.RPN.SMOOTH_L1_BETA == pytest.approx(1 / 9) and cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN == 2000
    assert cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE == "ce"
    if "htc" in name:
        assert (cfg.MODEL.HTC.INTERLEAVED, cfg.MODEL.HTC.MASK_INFO_FLOW, cfg.MODEL.HTC.WITH_SEMANTIC) == (
            True, True, False)


def test_detectron2_cascade_keeps_detectron2_weights():
    cfg = _load("CarDD/cascade_rcnn_d2_R_50_FPN.yaml")
    assert [tuple(w) for w in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS] == [
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]


@pytest.mark.parametrize("name", ["CarDD/gcnet_R_50_FPN.yaml", "CarDD/gcnet_R_101_FPN.yaml"])
def test_gcnet_values(name):
    cfg = _load(name)
    assert cfg.MODEL.BACKBONE.NAME == "build_cardd_resnet_fpn_backbone"
    assert list(cfg.MODEL.RESNETS.GC_ON_PER_STAGE) == [False, True, True, True]
    assert cfg.MODEL.RESNETS.GC_RATIO == 0.25
    assert not any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)


def test_gcnet_model_has_context_blocks_in_res3_to_res5(tiny_cfg):
    cfg = tiny_cfg("CarDD/gcnet_R_50_FPN.yaml")
    model = build_model(cfg)
    bottom_up = model.backbone.bottom_up
    with_gc = {
        stage: [any("gc" in n.lower() or "context" in type(m).__name__.lower() for n, m in block.named_modules())
                for block in getattr(bottom_up, stage).children()]
        for stage in ("res2", "res3", "res4", "res5")
    }
    assert not any(with_gc["res2"])
    assert all(all(v) for s, v in with_gc.items() if s != "res2")


@pytest.mark.parametrize(
    "name,heads",
    [("CarDD/cascade_mask_rcnn_R_50_FPN.yaml", "MMDetCascadeROIHeads"), ("CarDD/htc_R_50_FPN.yaml", "HTCROIHeads")],
)
def test_train_infer_evaluate_on_synthetic_data(synthetic_cardd, tiny_cfg, name, heads):
    from cardd_d2.data import register_coco_damage
    from cardd_d2.engine.trainer import CarDDTrainer

    tag = uuid.uuid4().hex[:8]
    train, test = f"cascade_train_{tag}", f"cascade_test_{tag}"
    register_coco_damage(train, synthetic_cardd["json"]["train"], synthetic_cardd["image_dirs"]["train"])
    register_coco_damage(test, synthetic_cardd["json"]["test"], synthetic_cardd["image_dirs"]["test"])
    try:
        cfg = tiny_cfg(name, *SMALL_NET, "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)",
                       "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)",
                       "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
        trainer = CarDDTrainer(cfg)
        trainer.resume_or_load(resume=False)
        assert type(trainer.model.roi_heads).__name__ == heads
        before = [h.predictor.weight.detach().clone() for h in trainer.model.roi_heads.mask_head]
        trainer.train()
        after = [h.predictor.weight.detach() for h in trainer.model.roi_heads.mask_head]
        assert all(not torch.equal(a, b) for a, b in zip(before, after))  # every stage's mask head was updated
        storage = trainer.storage.latest()
        for t in range(3):
            assert f"loss_mask_stage{t}" in storage and f"loss_cls_stage{t}" in storage
        results = CarDDTrainer.test(cfg, trainer.model)
        for task in ("bbox", "segm"):
            assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(results[task])
            assert all(isinstance(v, float) for v in results[task].values())
    finally:
        for n in (train, test):
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
