"""Training schedules: release vs paper recipes, lr per epoch, Adam re-created at the decay, pending gradients
dropped at epoch starts -- checked against a hand-written reference of the released PoolNet / SGL-KRN loop."""
import os

import pytest
import torch
import torch.nn.functional as F

from cardd_sod.config import setup_sod_cfg
from cardd_sod.engine import SODTrainer
from conftest import TinySODNet


def _lrs(config, epochs, *opts):
    cfg = setup_sod_cfg(config, ["MODEL.NAME", "tiny", "MODEL.DEVICE", "cpu", *opts])
    t = SODTrainer(cfg, progress=False)
    return [t.lr_at(e) for e in range(epochs)], cfg


@pytest.mark.parametrize("model", ["poolnet", "sgl_krn"])
def test_poolnet_sgl_krn_release_and_paper_schedules(model):
    release, cfg = _lrs(f"configs/SOD/{model}.yaml", 24)
    assert release == pytest.approx([5e-5] * 16 + [5e-6] * 8)  # decay after epoch index 15
    assert cfg.SOLVER.RESET_OPTIMIZER_AT_STEPS and cfg.SOLVER.DISCARD_PENDING_GRADS
    paper, _ = _lrs(f"configs/SOD/paper/{model}.yaml", 24)
    assert paper == pytest.approx([5e-5] * 15 + [5e-6] * 9)  # Table VII: epochs 1-15, 16-24


def test_csnet_and_u2net_release_and_paper_lengths():
    release, cfg = _lrs("configs/SOD/csnet.yaml", 300)
    assert release == pytest.approx([1e-4] * 300) and cfg.SOLVER.EPOCHS == 300
    paper, _ = _lrs("configs/SOD/paper/csnet.yaml", 300)
    assert paper == pytest.approx([1e-4] * 200 + [1e-5] * 50 + [1e-6] * 50)
    u2 = setup_sod_cfg("configs/SOD/u2net.yaml").SOLVER
    u2_paper = setup_sod_cfg("configs/SOD/paper/u2net.yaml").SOLVER
    assert u2.MAX_ITER == 137_280 and u2_paper.MAX_ITER == 0 and u2.EPOCHS == u2_paper.EPOCHS == 600


@pytest.fixture(scope="module")
def sod_root(tmp_path_factory):
    from cardd_d2.data.synthetic import make_synthetic_cardd
    return make_synthetic_cardd(str(tmp_path_factory.mktemp("sched_syn")), num_images=(5, 1, 1),
                                image_size=(48, 40), seed=5)["sod_root"]


def _release_reference(model, dataset, epochs, lr, decay_epochs, iter_size, wd):
    """The released PoolNet solver's loop: zero_grad at each epoch start, a step every iter_size images with the
    counter running across epochs, and at the end of epoch index e in decay_epochs lr x 0.1 and a new Adam."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    ave, lrs = 0, []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        model.zero_grad()
        lrs.append(lr)
        for i in range(len(dataset)):
            item = dataset[i]
            out = model(item["image"][None])
            loss = F.binary_cross_entropy_with_logits(out, item["mask"][None]) / iter_size
            loss.backward()
            ave += 1
            if ave % iter_size == 0:
                opt.step()
                opt.zero_grad()
                ave = 0
        if epoch in decay_epochs:
            lr = lr * 0.1
            opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return lrs, opt


@pytest.mark.parametrize("reset", [True, False])
def test_trainer_matches_the_released_loop(sod_root, tmp_path, reset):
    cfg = setup_sod_cfg(None, [
        "MODEL.NAME", "tiny_sorted", "MODEL.DEVICE", "cpu", "DATA.ROOT", sod_root, "DATA.NUM_WORKERS", "0",
        "SOLVER.BATCH_SIZE", "1", "SOLVER.EPOCHS", "3", "SOLVER.BASE_LR", "0.01", "SOLVER.WEIGHT_DECAY", "0.0005",
        "SOLVER.LR_STEPS", "[1]", "SOLVER.RESET_OPTIMIZER_AT_STEPS", str(reset), "SOLVER.DISCARD_PENDING_GRADS",
        "True", "TEST.EVAL_AT_END", "False", "SOLVER.CHECKPOINT_PERIOD", "0", "OUTPUT_DIR", str(tmp_path)])
    t = SODTrainer(cfg, progress=False)
    ref = TinySODNet()
    ref.load_state_dict(t.model.state_dict())
    out = t.train()
    lrs, ref_opt = _release_reference(ref, t.build_train_dataset(), 3, 0.01, [0] if reset else [], 3, 5e-4)
    if reset:
        assert [h["lr"] for h in out["history"]] == pytest.approx(lrs)
        assert lrs == pytest.approx([0.01, 0.001, 0.001])
        # 5 images per epoch, a step every 3 with the count running on: 1 step in epoch 1, 2 in each later epoch;
        # the fresh Adam of epoch 2 has seen only the last 4
        assert out["iter"] == 5
        steps = {int(s["step"]) for s in t.optimizer.state.values()}
        assert steps == {int(s["step"]) for s in ref_opt.state.values()} == {4}
        for (k, a), b in zip(t.model.state_dict().items(), ref.state_dict().values()):
            assert torch.equal(a, b), k
    else:
        # the same loop without the re-creation keeps Adam's moments: the parameters differ from the release's
        ref2 = TinySODNet()
        ref2.load_state_dict(SODTrainer(cfg, progress=False).model.state_dict())
        _release_reference(ref2, t.build_train_dataset(), 3, 0.01, [0], 3, 5e-4)
        assert {int(s["step"]) for s in t.optimizer.state.values()} == {5}
        assert any(not torch.equal(a, b) for a, b in zip(t.model.state_dict().values(), ref2.state_dict().values()))


def test_pending_gradients_carry_over_without_the_release_flag(sod_root, tmp_path):
    cfg = setup_sod_cfg(None, [
        "MODEL.NAME", "tiny_sorted", "MODEL.DEVICE", "cpu", "DATA.ROOT", sod_root, "DATA.NUM_WORKERS", "0",
        "SOLVER.BATCH_SIZE", "1", "SOLVER.EPOCHS", "1", "TEST.EVAL_AT_END", "False", "SOLVER.CHECKPOINT_PERIOD", "0",
        "OUTPUT_DIR", str(tmp_path)])
    t = SODTrainer(cfg, progress=False)
    t.train()
    assert all(p.grad is not None for p in t.model.parameters())  # 2 of 5 images pending
    t.before_epoch()
    assert all(p.grad is not None for p in t.model.parameters())
    t.cfg.SOLVER.DISCARD_PENDING_GRADS = True
    t.before_epoch()
    assert all(p.grad is None for p in t.model.parameters())
    assert os.path.isdir(tmp_path)
