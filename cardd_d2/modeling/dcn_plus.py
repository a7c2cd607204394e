"""DCN+ (the CarDD paper's method) as one named model.

Design
------
DCN+ is Mask R-CNN with three independent changes, each usable on its own:

1. **Deformable backbone** - DCNv1 (not modulated, 1 deformable group) in every block of res2-res5 with res2 frozen
   (``MODEL.BACKBONE.FREEZE_AT = 2`` = mmdet ``frozen_stages=1``; the frozen res2 offsets stay at their zero
   initialisation, so res2 acts as a plain conv). Keys: ``MODEL.RESNETS.DEFORM_ON_PER_STAGE / DEFORM_MODULATED /
   DEFORM_NUM_GROUPS`` read by ``MODEL.BACKBONE.NAME = "build_cardd_resnet_fpn_backbone"``.
2. **Focal ROI classifier loss** - ``MODEL.ROI_HEADS.NAME = "DCNPlusROIHeads"`` (always focal) or
   ``"CarDDStandardROIHeads"`` with ``MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE = "focal"``; variant "mmdet_sigmoid",
   alpha 0.5, gamma 2 (``cardd_d2.modeling.losses``).
3. **Multi-scale range resize** - ``INPUT.RANGE_RESIZE.ENABLED`` with width 1333 and height uniform in [640, 1200],
   aspect not kept (``cardd_d2.data.transforms``).

plus the released schedule: 4 images per batch, lr 0.005, 24 epochs of 2,816 images = 16,896 iterations, LR x0.1
after epochs 16 and 22 (11,264 / 15,488), 500-iteration linear warm-up from 0.001.

The name ``DCNPlusROIHeads`` in a config means the released ROI head; ``apply_dcn_plus_preset(cfg)`` turns any
Mask R-CNN config into the full released DCN+ (this is what ``configs/CarDD/dcn_plus_R_*_FPN.yaml`` spell out).
``DCN_PLUS_SETTINGS`` lists the exact values as (config key, value) pairs.
"""
from __future__ import annotations

from typing import Sequence, Tuple

__all__ = [
    "CARDD_TRAIN_IMAGES",
    "DCN_PLUS_SETTINGS",
    "apply_dcn_plus_preset",
    "epoch_schedule",
    "set_epoch_schedule",
]

CARDD_TRAIN_IMAGES = 2816
DCN_PLUS_BACKBONE = "build_cardd_resnet_fpn_backbone"


def epoch_schedule(
    ims_per_batch: int,
    epochs: int = 24,
    step_epochs: Sequence[int] = (16, 22),
    num_images: int = CARDD_TRAIN_IMAGES,
) -> Tuple[int, Tuple[int, ...]]:
    """(MAX_ITER, STEPS) of an mmdet epoch schedule. mmdet's loader drops no images (the last batch of an epoch is
    padded by its group sampler), so an epoch is ceil(num_images / ims_per_batch) iterations."""
    if ims_per_batch <= 0 or epochs <= 0:
        raise ValueError(f"epoch_schedule: ims_per_batch and epochs must be > 0, got {ims_per_batch}, {epochs}")
    iters_per_epoch = -(-num_images // ims_per_batch)
    return iters_per_epoch * epochs, tuple(iters_per_epoch * e for e in step_epochs)


def set_epoch_schedule(cfg, ims_per_batch: int, base_lr: float, epochs: int = 24, step_epochs=(16, 22),
                       num_images: int = CARDD_TRAIN_IMAGES):
    """Set SOLVER.IMS_PER_BATCH / BASE_LR / MAX_ITER / STEPS (and CHECKPOINT_PERIOD = one epoch) in place."""
    max_iter, steps = epoch_schedule(ims_per_batch, epochs, step_epochs, num_images)
    cfg.SOLVER.IMS_PER_BATCH = ims_per_batch
    cfg.SOLVER.BASE_LR = base_lr
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = steps
    cfg.SOLVER.CHECKPOINT_PERIOD = max_iter // epochs
    return cfg


# The released DCN+ (DCN_plus_cfg.py) as detectron2/cardd config values.
DCN_PLUS_SETTINGS = (
    ("MODEL.BACKBONE.NAME", DCN_PLUS_BACKBONE),
    ("MODEL.BACKBONE.FREEZE_AT", 2),
    ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [True, True, True, True]),
    ("MODEL.RESNETS.DEFORM_MODULATED", False),
    ("MODEL.RESNETS.DEFORM_NUM_GROUPS", 1),
    ("MODEL.ROI_HEADS.NAME", "DCNPlusROIHeads"),
    ("MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "focal"),
    ("MODEL.ROI_BOX_HEAD.FOCAL_VARIANT", "mmdet_sigmoid"),
    ("MODEL.ROI_BOX_HEAD.FOCAL_ALPHA", 0.5),
    ("MODEL.ROI_BOX_HEAD.FOCAL_GAMMA", 2.0),
    ("INPUT.RANGE_RESIZE.ENABLED", True),
    ("INPUT.RANGE_RESIZE.WIDTH", 1333),
    ("INPUT.RANGE_RESIZE.HEIGHT_RANGE", (640, 1200)),
    ("INPUT.RANGE_RESIZE.KEEP_RATIO", False),
    ("INPUT.RANDOM_FLIP", "horizontal"),
    ("INPUT.MIN_SIZE_TEST", 800),
    ("INPUT.MAX_SIZE_TEST", 1333),
    ("SOLVER.IMS_PER_BATCH", 4),
    ("SOLVER.BASE_LR", 0.005),
    ("SOLVER.MAX_ITER", 16896),
    ("SOLVER.STEPS", (11264, 15488)),
    ("SOLVER.CHECKPOINT_PERIOD", 704),
    ("SOLVER.MOMENTUM", 0.9),
    ("SOLVER.WEIGHT_DECAY", 1e-4),
    ("SOLVER.GAMMA", 0.1),
    ("SOLVER.WARMUP_METHOD", "linear"),
    ("SOLVER.WARMUP_ITERS", 500),
    ("SOLVER.WARMUP_FACTOR", 0.001),
)


def _set(cfg, dotted: str, value) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)


def apply_dcn_plus_preset(cfg, backbone_name: str = DCN_PLUS_BACKBONE):
    """Turn a (cardd) Mask R-CNN config into the released DCN+ in place and return it.

    Sets, from ``DCN_PLUS_SETTINGS``: DCNv1 on res2-res5 (1 group), FREEZE_AT 2 (res2 frozen), ROI heads
    "DCNPlusROIHeads" with focal "mmdet_sigmoid" alpha 0.5 gamma 2, range resize 1333 x [640, 1200] without keeping
    the aspect ratio, horizontal flip, 800/1333 test resize, and the schedule: batch 4, lr 0.005, 16,896 iterations,
    steps 11,264 / 15,488, warm-up 500 iterations from 0.001, SGD momentum 0.9, weight decay 1e-4.
    Depth (R-50 / R-101), weights, datasets and OUTPUT_DIR are left as they are.

    ``backbone_name`` replaces the deformable backbone builder (e.g. detectron2's "build_resnet_fpn_backbone", which
    honours the same DEFORM_* keys when detectron2 is compiled).
    """
    if not hasattr(cfg.INPUT, "RANGE_RESIZE"):
        raise ValueError(
            "apply_dcn_plus_preset: call cardd_d2.add_cardd_config(cfg) first (INPUT.RANGE_RESIZE missing)"
        )
    was_frozen = cfg.is_frozen()
    if was_frozen:
        cfg.defrost()
    for key, value in DCN_PLUS_SETTINGS:
        _set(cfg, key, value)
    cfg.MODEL.BACKBONE.NAME = backbone_name
    if was_frozen:
        cfg.freeze()
    return cfg
