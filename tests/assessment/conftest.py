import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from assessment_helpers import TINY_DETECTOR_OVERRIDES  # noqa: E402


@pytest.fixture
def tiny_det_cfg(tiny_cfg):
    """Frozen tiny Mask R-CNN (R-18-FPN, CPU, 64-128 px, 3 detections per image, no weights)."""
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
def save_tiny_weights(tiny_det_cfg, tmp_path):
    """Factory: save_tiny_weights(names or None, file name) -> path of a random-init checkpoint of the tiny model,
    laid out as tools/train_net.py writes them (``thing_classes`` stored unless ``names`` is None)."""
    from assessment_helpers import save_detector_checkpoint

    def make(names=None, name="tiny.pth"):
        return save_detector_checkpoint(tiny_det_cfg, str(tmp_path / name), names)

    return make


@pytest.fixture
def tiny_weights(save_tiny_weights):
    """Tiny checkpoint labelled with CarDD's six class names."""
    from cardd_d2.data.categories import CARDD_CLASS_NAMES

    return save_tiny_weights(list(CARDD_CLASS_NAMES), "tiny_cardd.pth")


@pytest.fixture
def tiny_predictor(tiny_config_file, tiny_weights):
    from cardd_d2.assessment.predictor import build_predictor, setup_cfg

    return build_predictor(setup_cfg(tiny_config_file, weights=tiny_weights))
