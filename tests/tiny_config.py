"""Tiny detectron2 settings shared by tests (imported by tests/conftest.py and test modules)."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_ROOT, "configs")

# Overrides that make any CarDD detection config tiny: small images, few proposals, a few iterations, CPU.
TINY_OVERRIDES = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "192",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "192",
    "INPUT.RANGE_RESIZE.WIDTH", "192",
    "INPUT.RANGE_RESIZE.HEIGHT_RANGE", "(96, 160)",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "TEST.DETECTIONS_PER_IMAGE", "20",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.BASE_LR", "0.001",
    "SOLVER.MAX_ITER", "3",
    "SOLVER.STEPS", "(2,)",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "1000",
    "DATALOADER.NUM_WORKERS", "0",
    "DATASETS.CHECK_IMAGES", "False",
    "SEED", "0",
    "VIS_PERIOD", "0",
]


def config_path(name: str) -> str:
    """Path of a config under configs/, e.g. config_path('CarDD/mask_rcnn_R_50_FPN.yaml')."""
    return os.path.join(CONFIGS, name)
