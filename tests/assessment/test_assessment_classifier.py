import json
import os

import numpy as np
import pytest
import torch
from assessment_helpers import save

from cardd_d2.assessment import classifier as C
from cardd_d2.assessment.gate import DamageGate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cls_folder(root, n=6, size=24, seed=0):
    """damaged = a red blob on grey; undamaged = plain grey (+ noise)."""
    rng = np.random.default_rng(seed)
    for label in ("damaged", "undamaged"):
        for k in range(n):
            img = np.full((size, size + 8, 3), 128, np.uint8) + rng.integers(0, 20, (size, size + 8, 3), np.uint8)
            if label == "damaged":
                img[4:14, 6:18] = [220, 30, 30]
            save(img, os.path.join(root, label, f"{k:03d}.png"))
    return root


def test_binary_metrics_reproduce_the_papers_arithmetic():
    # 500 damaged + 500 undamaged, 12 FN and 45 FP -> the paper's 94.3 / 91.6 / 97.6 / 4.5 / 1.2.
    y_true = [1] * 500 + [0] * 500
    y_pred = [1] * 488 + [0] * 12 + [1] * 45 + [0] * 455
    m = C.binary_metrics(y_true, y_pred)
    assert m["confusion"] == [[455, 45], [12, 488]]
    assert round(100 * m["accuracy"], 1) == 94.3 and round(100 * m["precision"], 1) == 91.6
    assert round(100 * m["recall"], 1) == 97.6 and m["fp_share"] == 0.045 and m["fn_share"] == 0.012
    text = C.format_metrics(m)
    assert "94.3%" in text and "Precision" in text


def test_vgg16_has_2_way_head_all_layers_trainable():
    torch.manual_seed(0)
    model = C.build_classifier("vgg16")
    assert model.classifier[-1].out_features == 2
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_imagenet_weights_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not in torchvision's cache"):
        C.build_classifier("vgg11", pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match="not found"):
        C.build_classifier("vgg11", pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown classifier arch"):
        C.build_classifier("resnet9000")


def test_datasets_folder_and_coco(tmp_path, synthetic_cardd):
    items = C.folder_items(_cls_folder(str(tmp_path / "cls"), n=2))
    assert sorted(lab for _, lab in items) == [0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match="undamaged"):
        C.folder_items(str(tmp_path))
    s = synthetic_cardd
    coco = C.coco_items(s["json"]["test"], s["image_dirs"]["test"], s["undamaged_dir"])
    with open(s["json"]["test"]) as f:
        annotated = {a["image_id"] for a in json.load(f)["annotations"]}
    n_und = len(os.listdir(s["undamaged_dir"]))
    assert sum(lab == 1 for _, lab in coco) == len(annotated) and sum(lab == 0 for _, lab in coco) == n_und
    ds = C.BinaryDamageDataset(coco, C.build_transform(32))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)


def test_train_tool_checkpoints_resume_and_evaluation(tmp_path, capsys):
    data = _cls_folder(str(tmp_path / "cls"))
    tool = _load_tool("train_classifier")
    common = ["--train", data, "--test", data, "--arch", "tiny", "--input-size", "32", "--batch-size", "4",
              "--lr", "0.01", "--num-workers", "0", "--no-progress", "--no-hflip"]
    out_a, out_b = str(tmp_path / "a"), str(tmp_path / "b")
    assert tool.main(common + ["--epochs", "2", "--output", out_a]) == 0
    printed = capsys.readouterr().out
    assert "Accuracy" in printed and "FP (share of test set)" in printed and "94.3%" in printed
    for f in ("last.pth", "model_final.pth", "metrics.json", "confusion_matrix.png"):
        assert os.path.isfile(os.path.join(out_a, f)), f
    metrics = json.load(open(os.path.join(out_a, "metrics.json")))
    assert metrics["n"] == 12 and sum(map(sum, metrics["confusion"])) == 12
    # 1 epoch, then resume to 2: identical to 2 straight epochs (same shuffles, optimiser state restored).
    assert tool.main(common + ["--epochs", "1", "--output", out_b]) == 0
    assert torch.load(os.path.join(out_b, "last.pth"), weights_only=True)["epoch"] == 0
    assert tool.main(common + ["--epochs", "2", "--output", out_b, "--resume"]) == 0
    a = torch.load(os.path.join(out_a, "model_final.pth"), weights_only=True)
    b = torch.load(os.path.join(out_b, "model_final.pth"), weights_only=True)
    assert len(b["history"]["epochs"]) == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k])
    # eval-only on the saved checkpoint gives the same metrics
    assert tool.main(["--eval-only", "--checkpoint", os.path.join(out_a, "model_final.pth"), "--test", data,
                      "--input-size", "32", "--num-workers", "0", "--no-progress", "--output",
                      str(tmp_path / "ev")]) == 0
    assert json.load(open(tmp_path / "ev" / "metrics.json"))["confusion"] == metrics["confusion"]
    # the checkpoint drives the gate
    gate = DamageGate.from_checkpoint(os.path.join(out_a, "model_final.pth"))
    p = gate.damaged_proba([np.zeros((20, 30, 3), np.uint8), np.full((40, 10, 3), 255, np.uint8)])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1)) and gate.input_size == 32


def test_gate_discard_rule():
    from assessment_helpers import constant_gate

    g = constant_gate(0.05)
    p = g.damaged_proba([np.zeros((8, 8, 3), np.uint8)])[0]
    assert p == pytest.approx(0.05, abs=1e-4) and g.discard(p)  # P(undamaged) 0.95 > 0.9
    assert not g.discard(0.1 + 1e-9) and not g.discard(0.5)  # P(undamaged) <= 0.9 is kept
    with pytest.raises(ValueError):
        DamageGate(g.model, discard_threshold=1.5)


def test_gate_from_config(tmp_path):
    from cardd_d2 import get_cardd_cfg

    cfg = get_cardd_cfg()
    assert cfg.MODEL.DAMAGE_GATE.DISCARD_THRESHOLD == 0.9
    assert DamageGate.from_config(cfg) is None
    model = C.build_classifier("tiny")
    path = C.save_checkpoint(str(tmp_path / "c.pth"), model, "tiny", 32, 0)
    cfg.MODEL.DAMAGE_GATE.WEIGHTS = path
    cfg.MODEL.DAMAGE_GATE.DISCARD_THRESHOLD = 0.7
    g = DamageGate.from_config(cfg)
    assert g.discard_threshold == 0.7 and g.input_size == 32
    with pytest.raises(ValueError, match="not a cardd classifier checkpoint"):
        torch.save({"x": 1}, str(tmp_path / "bad.pth"))
        C.load_classifier_checkpoint(str(tmp_path / "bad.pth"))


def test_imagenet_state_dict_drops_the_1000_way_layer(monkeypatch, tmp_path):
    from cardd_d2.assessment.classifier.model import _imagenet_state_dict

    fake = {"features.0.weight": torch.ones(2, 3, 3, 3), "classifier.6.weight": torch.zeros(1000, 4),
            "classifier.6.bias": torch.zeros(1000)}
    path = str(tmp_path / "vgg_imagenet.pth")
    torch.save(fake, path)
    assert set(_imagenet_state_dict("vgg16", path)) == {"features.0.weight"}
    # found in the (redirected) torchvision cache under torchvision's file name
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    os.makedirs(tmp_path / "checkpoints")
    torch.save(fake, C.imagenet_cache_path("vgg16"))
    assert set(_imagenet_state_dict("vgg16", "imagenet")) == {"features.0.weight"}
    # a fine-tuned 2-way state dict or one of our checkpoints is a checkpoint=, not pretrained weights
    torch.save({"classifier.6.weight": torch.zeros(2, 4)}, path)
    with pytest.raises(ValueError, match="checkpoint="):
        _imagenet_state_dict("vgg16", path)
    C.save_checkpoint(path, C.build_classifier("tiny"), "tiny", 32, 0)
    with pytest.raises(ValueError, match="checkpoint="):
        _imagenet_state_dict("vgg16", path)


class _Payload:
    pass


def test_checkpoints_are_read_once_and_safely(tmp_path, monkeypatch):
    model = C.build_classifier("tiny")
    path = C.save_checkpoint(str(tmp_path / "c.pth"), model, "tiny", 32, 3, extra={"history": {"epochs": []}})
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    loaded, ckpt = C.load_classifier_checkpoint(path)
    assert loads == [True] and ckpt["epoch"] == 3 and ckpt["input_size"] == 32
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    again = C.build_classifier("tiny", checkpoint=path)
    torch.testing.assert_close(again.state_dict()["classifier.3.bias"], model.state_dict()["classifier.3.bias"])
    assert loads == [True, True]
    torch.save({"model": model.state_dict(), "arch": "tiny", "payload": _Payload()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match="unsafe.pth: cannot be read"):
        C.load_classifier_checkpoint(str(tmp_path / "unsafe.pth"))
    with pytest.raises(ValueError, match="not both"):
        C.build_classifier("vgg11", pretrained="imagenet", checkpoint=path)
