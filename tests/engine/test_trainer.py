"""CarDDTrainer: training lowers the loss, --resume continues iteration, LR schedule and data order exactly."""
import json
import os

import pytest
import torch
from detectron2.engine import HookBase

from cardd_d2.engine import CarDDTrainer, register_datasets_for_cfg

QUICK = "CarDD/quickstart/mask_rcnn_R_50_narrow_FPN_scratch.yaml"


class _Interrupt(RuntimeError):
    pass


class _StopAfter(HookBase):
    def __init__(self, n):
        self.n = n

    def after_step(self):
        if self.trainer.iter + 1 == self.n:
            raise _Interrupt(f"simulated interruption after {self.n} iterations")


class _Recorder:
    """Wraps the trainer's data iterator to record the image ids of every batch."""

    def __init__(self, it, log):
        self.it, self.log = it, log

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        self.log.append([d["image_id"] for d in batch])
        return batch


def _trainer(cfg, resume, batches, lrs, stop_after=None):
    trainer = CarDDTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer._trainer._data_loader_iter_obj = _Recorder(iter(trainer.data_loader), batches)

    class _LR(HookBase):
        def after_step(self):
            lrs.append((self.trainer.iter, self.trainer.optimizer.param_groups[0]["lr"]))

    hooks = [_LR()] + ([_StopAfter(stop_after)] if stop_after else [])
    trainer.register_hooks(hooks)
    return trainer


RESUME_OVERRIDES = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.STEPS", "(2, 4)",
                    "SOLVER.WARMUP_ITERS", "2", "SOLVER.IMS_PER_BATCH", "2", "DATASETS.TEST", "()"]


def test_resume_continues_iteration_lr_and_data_order(synthetic_cardd, tiny_cfg, tmp_path):
    cfg_a = tiny_cfg(QUICK, *RESUME_OVERRIDES, "SEED", "0", "OUTPUT_DIR", str(tmp_path / "straight"))
    register_datasets_for_cfg(cfg_a, synthetic_cardd["root"])
    batches_a, lrs_a = [], []
    _trainer(cfg_a, False, batches_a, lrs_a).train()

    cfg_b = tiny_cfg(QUICK, *RESUME_OVERRIDES, "SEED", "0", "OUTPUT_DIR", str(tmp_path / "interrupted"))
    batches_b, lrs_b = [], []
    with pytest.raises(_Interrupt):
        _trainer(cfg_b, False, batches_b, lrs_b, stop_after=4).train()
    assert os.path.isfile(tmp_path / "interrupted" / "model_0000002.pth")

    batches_c, lrs_c = [], []
    resumed = _trainer(cfg_b, True, batches_c, lrs_c)
    assert resumed.start_iter == 3  # the last checkpoint was written after iteration 2
    resumed.train()
    assert resumed.iter == 6  # detectron2 leaves iter at max_iter after the loop

    assert len(batches_a) == 6 and len(batches_b) == 4 and len(batches_c) == 3
    assert batches_b == batches_a[:4]
    # iteration 3 is redone from the checkpoint with the same images, then the stream continues unchanged
    assert batches_c == batches_a[3:]
    assert [i for i, _ in lrs_c] == [3, 4, 5]
    assert [lr for _, lr in lrs_c] == pytest.approx([lr for i, lr in lrs_a if i >= 3])


def test_resume_restores_random_sampler_seed(synthetic_cardd, tiny_cfg, tmp_path):
    # SEED -1: the sampler seed is drawn at random, so only the checkpoint can give it back.
    cfg = tiny_cfg(QUICK, *RESUME_OVERRIDES, "SEED", "-1", "SOLVER.MAX_ITER", "3")
    register_datasets_for_cfg(cfg, synthetic_cardd["root"])
    first = CarDDTrainer(cfg)
    first.resume_or_load(resume=False)
    first.train()
    seed = first._sampler.state_dict()["seed"]

    cfg2 = cfg.clone()
    cfg2.SOLVER.MAX_ITER = 6
    again = CarDDTrainer(cfg2)
    again.resume_or_load(resume=True)
    assert again.start_iter == 3
    assert again._sampler.state_dict()["seed"] == seed
    assert again._sampler.next_position == 3 * 2


def test_training_lowers_loss(synthetic_cardd, tiny_cfg):
    cfg = tiny_cfg(QUICK, "SOLVER.MAX_ITER", "30", "SOLVER.BASE_LR", "0.01", "SOLVER.STEPS", "()",
                   "SOLVER.WARMUP_ITERS", "3", "INPUT.RANDOM_FLIP", "none", "DATASETS.TEST", "()")
    register_datasets_for_cfg(cfg, synthetic_cardd["root"])
    trainer = CarDDTrainer(cfg)
    trainer.resume_or_load(resume=False)
    on_disk = {}

    class _ReadMetricsWhileRunning(HookBase):
        # what a run killed now would leave: metrics.json must already hold the first log period (iterations 0-19)
        def after_step(self):
            if self.trainer.iter == 19:
                with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")) as f:
                    on_disk["rows"] = [json.loads(line) for line in f if line.strip()]

    trainer.register_hooks([_ReadMetricsWhileRunning()])
    trainer.train()
    assert [r["iteration"] for r in on_disk["rows"]] == [19] and "total_loss" in on_disk["rows"][0]
    total = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(total) == 30 and all(torch.isfinite(torch.tensor(total)))
    first, last = sum(total[:5]) / 5, sum(total[-5:]) / 5
    assert last < 0.85 * first, total
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))


def _seeded_trainer(cfg, resume, stop_after=None):
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(0)
    trainer = CarDDTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    if stop_after:
        trainer.register_hooks([_StopAfter(stop_after)])
    return trainer


def test_resume_is_bit_identical_with_random_augmentations(synthetic_cardd, tiny_cfg, tmp_path):
    # range resize (random height per image) + random flips: the resumed half must draw the same augmentations
    opts = ["SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.STEPS", "(3,)", "DATASETS.TEST", "()",
            "INPUT.RANGE_RESIZE.ENABLED", "True", "INPUT.RANDOM_FLIP", "horizontal", "SEED", "3"]
    cfg_a = tiny_cfg(QUICK, *opts, "OUTPUT_DIR", str(tmp_path / "a"))
    register_datasets_for_cfg(cfg_a, synthetic_cardd["root"])
    straight = _seeded_trainer(cfg_a, False)
    straight.train()

    cfg_b = tiny_cfg(QUICK, *opts, "OUTPUT_DIR", str(tmp_path / "b"))
    with pytest.raises(_Interrupt):
        _seeded_trainer(cfg_b, False, stop_after=2).train()
    torch.manual_seed(12345)  # a new process: the global generators are in some other state
    import numpy as np

    np.random.seed(999)
    resumed = _seeded_trainer(cfg_b, True)
    assert resumed.start_iter == 2
    resumed.train()

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == [], different


def test_checkpoints_carry_the_training_class_names(synthetic_cardd, tiny_cfg, tmp_path):
    import json

    from cardd_d2.checkpoint.class_names import read_checkpoint_info
    from cardd_d2.data import register_coco_damage

    names = ["door", "hood", "front_bumper", "rear_bumper", "fender", "damage"]
    data = json.load(open(synthetic_cardd["json"]["train"]))
    assert len(data["categories"]) == len(names)
    for cat, name in zip(sorted(data["categories"], key=lambda c: c["id"]), names):
        cat["name"] = name
    json_file = tmp_path / "parts_train.json"
    json_file.write_text(json.dumps(data))
    register_coco_damage("parts_train_names", str(json_file), synthetic_cardd["image_dirs"]["train"],
                         check_images=False)
    out = tmp_path / "parts"
    cfg = tiny_cfg(QUICK, "DATASETS.TRAIN", "('parts_train_names',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2",
                   "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", str(out))
    trainer = CarDDTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    for f in ("model_0000000.pth", "model_final.pth"):
        assert read_checkpoint_info(str(out / f)).thing_classes == names


def test_importing_the_trainer_leaves_detectron2_alone():
    import detectron2.engine.defaults as d2_defaults

    import cardd_d2.engine.trainer  # noqa: F401

    # the CPU-aware DDP wrapper applies only while CarDDTrainer builds its model
    assert d2_defaults.create_ddp_model.__module__ == "detectron2.engine.defaults"
    assert d2_defaults.create_ddp_model.__name__ == "create_ddp_model"


def test_other_training_samplers_are_refused_not_ignored(tiny_cfg):
    cfg = tiny_cfg(QUICK, "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler")
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER_TRAIN 'RepeatFactorTrainingSampler' is not supported"):
        CarDDTrainer.build_train_loader(cfg)
