"""SOD trainer: exact resume, schedule / accumulation, AMP, end-to-end on synthetic data (CPU, tiny)."""
import json
import os

import pytest
import torch

from cardd_sod.config import setup_sod_cfg
from cardd_sod.engine import EpochShuffleSampler, SODTrainer


@pytest.fixture(scope="module")
def sod_root(tmp_path_factory):
    from cardd_d2.data.synthetic import make_synthetic_cardd
    return make_synthetic_cardd(str(tmp_path_factory.mktemp("sod_train_syn")), num_images=(6, 3, 3),
                                image_size=(160, 120), seed=2)["sod_root"]


def _cfg(root, out, *extra, config="configs/SOD/csnet.yaml"):
    return setup_sod_cfg(config, [
        "MODEL.NAME", "tiny", "MODEL.DEVICE", "cpu", "DATA.ROOT", root, "DATA.NUM_WORKERS", "0",
        "INPUT.SIZE", "[32, 40]", "SOLVER.BATCH_SIZE", "2", "SOLVER.EPOCHS", "2", "SOLVER.BASE_LR", "0.01",
        "SOLVER.LR_STEPS", "[1]", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.LOG_PERIOD", "1", "OUTPUT_DIR", str(out),
        *extra])


def _state(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("iter_size", [1, 4])
def test_resume_is_exact(sod_root, tmp_path, iter_size):
    # iter_size 4 with 3 batches per epoch leaves an unfinished accumulation at the epoch end (carried over)
    extra = ["SOLVER.ITER_SIZE", str(iter_size), "TEST.EVAL_AT_END", "False"]
    full = SODTrainer(_cfg(sod_root, tmp_path / "full", *extra), progress=False)
    full.train()
    part_cfg = _cfg(sod_root, tmp_path / "part", *extra)
    part_cfg.SOLVER.EPOCHS = 1
    part = SODTrainer(part_cfg, progress=False)
    part.train()
    assert part.epoch == 1
    resumed = SODTrainer(_cfg(sod_root, tmp_path / "part", *extra), progress=False)
    resumed.train(resume=True)
    assert resumed.epoch == 2 and resumed.iter == full.iter == (6 if iter_size == 1 else 1)
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    fresh = SODTrainer(_cfg(sod_root, tmp_path / "fresh", *extra), progress=False)
    assert not all(torch.equal(fresh.model.state_dict()[k], a[k]) for k in a if a[k].is_floating_point())


def test_sampler_order_depends_on_seed_and_epoch_only():
    s = EpochShuffleSampler(10, seed=4)
    s.set_epoch(3)
    first = list(s)
    assert first == list(s) and sorted(first) == list(range(10))
    s.set_epoch(4)
    assert list(s) != first


def test_optimizer_follows_config(sod_root, tmp_path):
    cfg = _cfg(sod_root, tmp_path, "INPUT.PRESET", "poolnet", config="configs/SOD/poolnet.yaml")
    t = SODTrainer(cfg, progress=False)
    g = t.optimizer.param_groups[0]
    assert isinstance(t.optimizer, torch.optim.Adam) and g["weight_decay"] == 5e-4 and g["betas"] == (0.9, 0.999)
    assert t.scheduler.milestones == {1: 1} and cfg.SOLVER.ITER_SIZE == 10
    assert t.preprocess.color == "bgr" and t.preprocess.size == (32, 40)
    from cardd_sod.engine import build_loss_for
    pcfg = cfg.clone()
    pcfg.MODEL.NAME = "poolnet"
    loss = build_loss_for(pcfg, model=None)  # the real PoolNet loss normalises by iter_size itself
    assert loss.iter_size == 10
    pred, target = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert float(loss(pred, target)[0]) == pytest.approx(16 * 0.6931471805599453 / 10, rel=1e-6)


def test_bf16_autocast_on_cpu_and_fp16_refused(sod_root, tmp_path):
    t = SODTrainer(_cfg(sod_root, tmp_path / "bf16", "SOLVER.AMP", "bf16", "SOLVER.MAX_ITER", "1",
                        "TEST.EVAL_AT_END", "False"), progress=False)
    out = t.train()
    assert out["iter"] == 1 and torch.isfinite(torch.tensor(out["history"][0]["loss"]))
    with pytest.raises(ValueError, match="fp16"):
        SODTrainer(_cfg(sod_root, tmp_path / "fp16", "SOLVER.AMP", "fp16"), progress=False)


def test_train_tool_end_to_end(sod_root, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_sod", "tools/train_sod.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "e2e"
    res = mod.main(["--config", "configs/SOD/csnet.yaml", "--no-progress", "MODEL.NAME", "tiny", "MODEL.DEVICE",
                    "cpu", "DATA.ROOT", sod_root, "DATA.NUM_WORKERS", "0", "INPUT.SIZE", "[32, 40]",
                    "SOLVER.BATCH_SIZE", "3", "SOLVER.EPOCHS", "1", "OUTPUT_DIR", str(out)])
    m = res["metrics"]
    assert m["num_images"] == 3 and 0 <= m["MAE"] <= 1 and 0 <= m["S_m"] <= 1
    preds = sorted(os.listdir(out / "predictions" / "CarDD-TE"))
    assert len(preds) == 3
    import cv2
    p = cv2.imread(str(out / "predictions" / "CarDD-TE" / preds[0]), 0)
    assert p.shape == (120, 160)  # resized back to the original image size
    with open(out / "metrics" / "sod_metrics_TE.json") as f:
        assert json.load(f)["F_beta"] == m["F_beta"]
    assert os.path.isfile(out / "checkpoints" / "epoch_0001.pth") and os.listdir(out / "tb")
    again = mod.main(["--config", str(out / "config.yaml"), "--eval-only", "--resume", "--no-progress"])
    assert again["metrics"]["MAE"] == pytest.approx(m["MAE"])


def test_presets_agree_with_model_specs():
    from cardd_sod.data import get_preprocess
    from cardd_sod.models import SOD_MODEL_SPECS
    for name, spec in SOD_MODEL_SPECS.items():
        pp = get_preprocess(name)
        norm = spec["normalize"]
        assert pp.size == (tuple(spec["input_size"]) if spec["input_size"] else None), name
        assert pp.color == norm["color"].lower(), name
        assert pp.mean == pytest.approx(tuple(norm["mean"])) and pp.std == pytest.approx(tuple(norm["std"])), name
        scale = {"255": 1 / 255, "none": 1.0, "max": "max"}[pp.scale]
        assert scale == (norm["scale"] if norm["scale"] == "max" else pytest.approx(norm["scale"])), name
        assert pp.crop == (tuple(spec["train_crop"]) if spec.get("train_crop") else None), name


@pytest.mark.parametrize("model,size", [("u2netp", "[40, 40]"), ("csnet", "[32, 48]")])
def test_real_model_tiny_end_to_end(sod_root, tmp_path, model, size):
    extra = ["SOLVER.EPOCHS", "1", "SOLVER.MAX_ITER", "2", "SOLVER.BATCH_SIZE", "2", "INPUT.SIZE", size,
             "DATA.MAX_TEST_IMAGES", "2", "SOLVER.CHECKPOINT_PERIOD", "1"]
    if model == "u2netp":
        extra += ["INPUT.CROP", "[32, 32]"]
    cfg = _cfg(sod_root, tmp_path / model, *extra, config=f"configs/SOD/{model}.yaml")
    cfg.MODEL.NAME = model
    t = SODTrainer(cfg, progress=False)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    out = t.train()
    assert out["iter"] == 2
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    m = out["metrics"]
    assert m["num_images"] == 2 and all(0 <= m[c] <= 1 for c in ("F_beta", "wF_beta", "S_m", "E_m", "MAE"))
    assert len(os.listdir(tmp_path / model / "predictions" / "CarDD-TE")) == 2
