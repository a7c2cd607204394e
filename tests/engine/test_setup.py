"""The one config builder: cardd's keys, their naming scheme, the CUDA fallback, nothing extra in dumped configs."""
import glob
import logging
import os

import pytest
import yaml
from detectron2.config import get_cfg

from cardd_d2.config import add_cardd_config, get_cardd_cfg
from cardd_d2.engine import setup_cfg
from tiny_config import CONFIGS


def _leaf_keys(node, prefix=""):
    keys = set()
    for k, v in node.items():
        if isinstance(v, dict):
            keys |= _leaf_keys(v, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def test_dumped_config_holds_only_real_keys():
    cfg = get_cardd_cfg()
    dumped = yaml.safe_load(cfg.dump())
    added = _leaf_keys(dumped) - _leaf_keys(yaml.safe_load(get_cfg().dump()))
    assert added, "add_cardd_config added no keys"
    # every added key is named for what it does inside the detectron2 node it configures, not after the project
    assert [k for k in added if "CARDD" in k.upper()] == []
    assert "MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS" in added
    for key in ("DATASETS.ROOT", "DATASETS.SKIP_INVALID", "TEST.EVALUATOR.AREA_RANGES", "MODEL.DAMAGE_GATE.WEIGHTS"):
        assert key in added


def test_add_cardd_config_twice_keeps_values():
    cfg = get_cardd_cfg()
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS = (1.0, 1.0, 1.0)
    assert add_cardd_config(cfg) is cfg
    assert tuple(cfg.MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("old", ["DATASETS.CARDD.ROOT", "TEST.CARDD_EVAL.METHOD_NAME",
                                 "MODEL.CARDD_CASCADE.STAGE_LOSS_WEIGHTS", "CARDD.CLASSIFIER.WEIGHTS"])
def test_old_key_spellings_are_rejected(old):
    with pytest.raises(AssertionError, match="Non-existent key"):  # yacs' error for an unknown key
        setup_cfg(None, [old, "x"])


def test_every_shipped_yaml_loads():
    files = sorted(glob.glob(os.path.join(CONFIGS, "*.yaml")) +
                   glob.glob(os.path.join(CONFIGS, "CarDD", "**", "*.yaml"), recursive=True))
    assert files
    for f in files:
        setup_cfg(f, freeze=False)


def test_one_cuda_fallback_for_training_and_inference_tools(monkeypatch, caplog, tmp_path):
    import torch

    from cardd_d2.assessment.predictor import setup_cfg as setup_inference_cfg

    weights = str(tmp_path / "w.pth")
    torch.save({"model": {}}, weights)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="cardd_d2"):
        a = setup_cfg(None, ["MODEL.DEVICE", "cuda"])
        b = setup_inference_cfg(None, device="cuda:0", weights=weights, confidence_threshold=1,
                                classifier_weights="c.pth", discard_threshold=0.7,
                                class_names=[f"c{i}" for i in range(80)])
    assert a.MODEL.DEVICE == b.MODEL.DEVICE == "cpu"
    messages = [r.getMessage() for r in caplog.records if "CUDA is not available" in r.getMessage()]
    assert len(messages) == 2 and all(r.name == "cardd_d2.engine.setup" for r in caplog.records
                                      if "CUDA" in r.getMessage()), caplog.records
    assert b.MODEL.WEIGHTS == weights and b.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 1.0
    assert b.MODEL.DAMAGE_GATE.WEIGHTS == "c.pth" and b.MODEL.DAMAGE_GATE.DISCARD_THRESHOLD == 0.7
    assert b.is_frozen()


def test_unknown_setting_names_the_key():
    with pytest.raises(KeyError, match="MODEL.NO_SUCH_KEY"):
        setup_cfg(None, settings={"MODEL.NO_SUCH_KEY": 1})
