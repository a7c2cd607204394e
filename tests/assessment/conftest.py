import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from assessment_helpers import TINY_DETECTOR_OVERRIDES  # noqa: E402


@pytest.fixture
def tiny_det_cfg(tiny_cfg):
    """Frozen tiny Mask R-CNN (R-18-FPN, random init, CPU, 64-128 px, 3 detections per image)."""
    cfg = tiny_cfg("CarDD/mask_rcnn_R_50_FPN.yaml", *TINY_DETECTOR_OVERRIDES)
    cfg.freeze()
    return cfg


@pytest.fixture
def tiny_config_file(tiny_det_cfg, tmp_path):
    """The tiny config dumped to a YAML file, for the command-line tools."""
    path = tmp_path / "tiny_mask_rcnn.yaml"
    path.write_text(tiny_det_cfg.dump())
    return str(path)


@pytest.fixture
def tiny_predictor(tiny_det_cfg):
    from cardd_d2.assessment.predictor import build_predictor

    return build_predictor(tiny_det_cfg)
