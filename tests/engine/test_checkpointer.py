"""TrainingCheckpointer: class names in every file, atomic files, resume past a damaged newest checkpoint."""
import logging
import os

import pytest
import torch
from torch import nn

from cardd_d2.checkpoint.checkpointer import TrainingCheckpointer
from cardd_d2.checkpoint.class_names import THING_CLASSES_KEY, read_checkpoint_info

NAMES = ["door", "hood", "damage"]


class _Counter:
    def __init__(self, n=0):
        self.n = n

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def _checkpointer(tmp_path, names=NAMES, value=0.0):
    model = nn.Linear(2, 2)
    nn.init.constant_(model.weight, value)
    counter = _Counter()
    return TrainingCheckpointer(model, str(tmp_path), thing_classes=names, save_to_disk=True, counter=counter)


def test_every_saved_file_carries_the_class_names(tmp_path):
    ck = _checkpointer(tmp_path)
    ck.save("model_0000004", iteration=4)
    ck.save("model_final", iteration=9)
    for name in ("model_0000004.pth", "model_final.pth"):
        info = read_checkpoint_info(str(tmp_path / name))  # what inference reads (weights_only)
        assert info.thing_classes == NAMES
        assert torch.load(tmp_path / name, weights_only=False)[THING_CLASSES_KEY] == NAMES


def test_a_failed_save_leaves_the_previous_files_intact(tmp_path, monkeypatch):
    ck = _checkpointer(tmp_path)
    ck.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()

    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")  # what a killed or full-disk write leaves behind
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        ck.save("model_final")
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temporary file left


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, caplog):
    ck = _checkpointer(tmp_path, value=1.0)
    ck.checkpointables["counter"].n = 3
    ck.save("model_0000003", iteration=3)
    ck.model.weight.data.fill_(2.0)
    ck.checkpointables["counter"].n = 7
    ck.save("model_0000007", iteration=7)
    newest = tmp_path / "model_0000007.pth"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: killed while writing without atomic saves
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000007.pth"

    fresh = _checkpointer(tmp_path, value=0.0)
    with caplog.at_level(logging.WARNING):
        extra = fresh.resume_or_load("", resume=True)
    assert extra["iteration"] == 3
    assert fresh.checkpointables["counter"].n == 3
    assert torch.equal(fresh.model.weight, torch.ones(2, 2))
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "model_0000007.pth" in warnings and "model_0000003.pth" in warnings


def test_resume_with_no_readable_checkpoint_names_the_files(tmp_path):
    ck = _checkpointer(tmp_path)
    ck.save("model_0000001", iteration=1)
    (tmp_path / "model_0000001.pth").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="model_0000001.pth"):
        _checkpointer(tmp_path).resume_or_load("", resume=True)


def test_resume_on_other_classes_is_an_error_naming_both(tmp_path):
    _checkpointer(tmp_path).save("model_0000001", iteration=1)
    with pytest.raises(ValueError, match=r"door.*scratch|scratch.*door"):
        _checkpointer(tmp_path, names=["scratch", "dent", "crack"]).resume_or_load("", resume=True)


def test_loading_weights_without_resume_reads_only_the_model(tmp_path):
    ck = _checkpointer(tmp_path, value=5.0)
    ck.checkpointables["counter"].n = 4
    ck.save("model_final", iteration=4)
    fresh = _checkpointer(tmp_path / "other")
    fresh.resume_or_load(str(tmp_path / "model_final.pth"), resume=True)  # no checkpoint in its own folder
    assert torch.equal(fresh.model.weight, torch.full((2, 2), 5.0)) and fresh.checkpointables["counter"].n == 0
