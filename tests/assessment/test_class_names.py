"""Class names stored in checkpoints: safe reading, and the checks against the config and datasets."""
import logging
import pickle

import numpy as np
import pytest
import torch

from cardd_d2.checkpoint.class_names import (
    THING_CLASSES_KEY,
    CheckpointError,
    ClassNamesError,
    check_same_names,
    read_checkpoint_info,
    resolve_class_names,
)
from cardd_d2.config import get_cardd_cfg

PARTS = ["door", "front_bumper", "hood", "fender", "headlamp", "damage"]


def _ckpt(path, k=6, names=None, **extra):
    obj = {"model": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(k + 1, 4)}, **extra}
    if names is not None:
        obj[THING_CLASSES_KEY] = names
    torch.save(obj, path)
    return str(path)


def _cfg(weights="", k=6, test=(), names=()):
    cfg = get_cardd_cfg()
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = k
    cfg.DATASETS.TEST = tuple(test)
    cfg.DATASETS.TRAIN = ()
    cfg.MODEL.CLASS_NAMES = list(names)
    return cfg


def test_read_names_count_and_numpy_state(tmp_path):
    p = _ckpt(tmp_path / "m.pth", names=PARTS, iteration=7, rng=np.random.get_state())
    info = read_checkpoint_info(p)
    assert info.thing_classes == PARTS and info.num_classes == 6
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": {}}, legacy, _use_new_zipfile_serialization=False)
    assert read_checkpoint_info(str(legacy)).thing_classes is None
    pkl = tmp_path / "zoo.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "__author__": "zoo"}, protocol=2))
    assert read_checkpoint_info(str(pkl)).thing_classes is None  # .pkl files are not unpickled here
    pkl.write_bytes(pkl.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="zoo.pkl: cannot be read"):
        read_checkpoint_info(str(pkl))


class _Obj:
    pass


def test_unreadable_weights_name_the_file(tmp_path):
    good = _ckpt(tmp_path / "good.pth", names=PARTS)
    data = open(good, "rb").read()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pth").write_bytes(b"garbage" * 10)
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"model": {}, "obj": _Obj()}, tmp_path / "pickled.pth")
    cases = {"missing.pth": "not found", "half.pth": "cannot be read", "junk.pth": "cannot be read",
             "empty.pth": "empty", "pickled.pth": "_Obj", ".": "directory"}
    for name, words in cases.items():
        path = str(tmp_path / name)
        with pytest.raises(CheckpointError) as e:
            read_checkpoint_info(path)
        assert path in str(e.value) and words in str(e.value), str(e.value)
    torch.save({"model": {}, THING_CLASSES_KEY: "door"}, tmp_path / "badnames.pth")
    with pytest.raises(CheckpointError, match="not a list of class names"):
        read_checkpoint_info(str(tmp_path / "badnames.pth"))


def test_checkpoint_names_win_over_the_config_dataset(tmp_path):
    p = _ckpt(tmp_path / "m.pth", names=PARTS)
    assert resolve_class_names(_cfg(p, test=["cardd_test"])) == (PARTS, f"checkpoint {p}")
    explicit = [n.upper() for n in PARTS]
    assert resolve_class_names(_cfg(p, names=explicit))[0] == explicit


def test_fallback_to_dataset_names_warns(tmp_path, caplog):
    p = _ckpt(tmp_path / "old.pth")
    with caplog.at_level(logging.WARNING):
        names, source = resolve_class_names(_cfg(p, test=["cardd_test"]))
    assert names[:3] == ["dent", "scratch", "crack"] and "cardd_test" in source
    assert "stores no class names" in caplog.text and "MODEL.CLASS_NAMES" in caplog.text
    with pytest.raises(ClassNamesError, match="MODEL.CLASS_NAMES"):
        resolve_class_names(_cfg(p, test=["my_parts_test"]))  # unknown dataset: no guessing


def test_mismatches_name_both_sides(tmp_path):
    p = _ckpt(tmp_path / "m.pth", names=PARTS)
    with pytest.raises(ClassNamesError) as e:
        resolve_class_names(_cfg(p, k=5))
    assert p in str(e.value) and "MODEL.ROI_HEADS.NUM_CLASSES is 5" in str(e.value) and "door" in str(e.value)
    p4 = _ckpt(tmp_path / "four.pth", k=4)  # no names, but its box predictor has 4 classes
    with pytest.raises(ClassNamesError, match="predicts 4 classes but MODEL.ROI_HEADS.NUM_CLASSES is 6"):
        resolve_class_names(_cfg(p4, test=["cardd_test"]))
    with pytest.raises(ClassNamesError, match="MODEL.CLASS_NAMES has 2 classes"):
        resolve_class_names(_cfg(p, names=["a", "b"]))
    with pytest.raises(ClassNamesError) as e:
        check_same_names(PARTS, f"checkpoint {p}", ["dent"] * 6, "dataset cardd_test")
    assert p in str(e.value) and "cardd_test" in str(e.value) and "door" in str(e.value)
