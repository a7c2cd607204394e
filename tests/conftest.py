"""Shared fixtures: synthetic CarDD data and tiny detectron2 configs that train in seconds on CPU."""
import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
    "DATASETS.CARDD.CHECK_IMAGES", "False",
    "SEED", "0",
    "VIS_PERIOD", "0",
]


def config_path(name: str) -> str:
    """Path of a config under configs/, e.g. config_path('CarDD/mask_rcnn_R_50_FPN.yaml')."""
    return os.path.join(CONFIGS, name)


@pytest.fixture(scope="session")
def synthetic_cardd(tmp_path_factory):
    """make_synthetic_cardd() with its defaults, written once per test worker; registered as cardd_* splits."""
    from cardd_d2.data.synthetic import make_synthetic_cardd

    root = tmp_path_factory.mktemp("synthetic_cardd")
    return make_synthetic_cardd(str(root), num_images=(8, 4, 4), num_undamaged=4)


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: tiny_cfg(config_file_or_None, *overrides) -> unfrozen CfgNode with cardd keys and TINY_OVERRIDES.

    ``config_file`` may be absolute or relative to configs/. OUTPUT_DIR is a fresh temporary folder.
    """
    from cardd_d2.engine import setup_cfg

    def make(config_file=None, *overrides):
        if config_file and not os.path.isabs(config_file):
            config_file = config_path(config_file)
        opts = TINY_OVERRIDES + ["OUTPUT_DIR", str(tmp_path / "output")] + list(overrides)
        return setup_cfg(config_file, opts, freeze=False)

    return make
