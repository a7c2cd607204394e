"""Epoch-based SOD trainer (Adam + step schedule, gradient accumulation, exact resume, TensorBoard, AMP).

Schedule (configs/SOD/*.yaml follow the released code, configs/SOD/paper/*.yaml the paper's Table VII): an epoch
that starts after ``n`` completed epochs runs at ``BASE_LR * GAMMA ** #{s in SOLVER.LR_STEPS : n >= s}``, i.e. the lr
drops after each epoch listed.  ``SOLVER.RESET_OPTIMIZER_AT_STEPS`` re-creates Adam at each drop (moments and step
counts reset, as the PoolNet / SGL-KRN release does).  With an accumulation count k (the model spec's ``iter_size``,
or ``SOLVER.ITER_SIZE`` when > 0) each batch's loss is divided by k and the optimizer steps every k batches (PoolNet /
SGL-KRN: 10 images of batch 1).  Gradients still pending at an epoch end carry over into the next epoch (and into
the checkpoint), unless ``SOLVER.DISCARD_PENDING_GRADS`` drops them at the epoch start while the count goes on (the
PoolNet / SGL-KRN release).  The data order is the model spec's: shuffled per epoch, or the sorted file order.

Exact resume: checkpoints (every ``SOLVER.CHECKPOINT_PERIOD`` epochs, at epoch ends) hold model, optimizer,
GradScaler, epoch / iteration counters, pending accumulated gradients and the torch / numpy / python / CUDA
RNG states.  Data order is a permutation drawn from ``(SEED, epoch)`` and augmentation draws from ``(SEED, epoch,
index)``, so a resumed run sees exactly the batches the uninterrupted run would have seen.

AMP: ``SOLVER.AMP`` = "" (fp32, what the paper used), "bf16" (autocast, CPU or CUDA) or "fp16" (autocast + GradScaler,
CUDA only).  Losses are always computed from the model outputs cast to fp32.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import warnings
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from tqdm import tqdm

from ..config import CfgNode
from ..data import CarDDSODDataset, PreprocessSpec, sod_collate
from ..data.layout import sod_split_dirs
from ..fileio import atomic_open, atomic_torch_save
from ..losses import build_sod_loss
from ..map_saving import SAVE_RULES, saliency_to_uint8, write_map
from ..metrics import evaluate_saliency, write_results
from ..models import build_sod_model, get_sod_spec

__all__ = ["SODTrainer", "EpochShuffleSampler", "build_preprocess", "model_kwargs", "predict_saliency_maps",
           "resolve_device"]

logger = logging.getLogger("cardd_sod.engine")


class EpochShuffleSampler(Sampler):
    """Permutation of range(n) determined by (seed, epoch) only."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def resolve_device(name: str) -> torch.device:
    if name in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE={name!r} but CUDA is not available")
    return dev


def build_preprocess(cfg: CfgNode) -> PreprocessSpec:
    """The preprocessing of MODEL.NAME's spec (or of INPUT.PRESET's model) with the INPUT overrides applied."""
    pp = get_sod_spec(cfg.INPUT.PRESET or cfg.MODEL.NAME).preprocess
    kw = {}
    if cfg.INPUT.SIZE is not None:
        kw["size"] = tuple(cfg.INPUT.SIZE) if cfg.INPUT.SIZE else None
    if cfg.INPUT.CROP is not None:
        kw["crop"] = tuple(cfg.INPUT.CROP) if cfg.INPUT.CROP else None
    if cfg.INPUT.MAX_SIZE:
        kw["max_size"] = int(cfg.INPUT.MAX_SIZE)
    return dataclasses.replace(pp, **kw)


def _open_writer(log_dir: str, purge_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard is optional: keep training
        logger.warning("TensorBoard disabled: %s", e)
        return None
    return SummaryWriter(log_dir, purge_step=purge_step or None)


def _amp_dtype(amp: str, device: torch.device):
    amp = (amp or "").lower()
    if amp in ("", "none", "fp32", "false"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("SOLVER.AMP=fp16 needs CUDA; use bf16 on CPU")
        return torch.float16
    raise ValueError(f"SOLVER.AMP must be '', 'bf16' or 'fp16', got {amp!r}")


def _to_float(outputs):
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_to_float(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    return outputs


@torch.no_grad()
def predict_saliency_maps(model, dataset: CarDDSODDataset, out_dir: str, device: torch.device,
                          batch_size: int = 1, amp: str = "", num_workers: int = 0, progress: bool = True) -> list:
    """Run ``model.saliency`` on every item and write ``<out_dir>/<stem>.png`` (uint8, original image size) with
    the preprocessing spec's ``save_rule`` (the released test script's resizing and rounding,
    :mod:`cardd_sod.map_saving`)."""
    from tqdm import tqdm
    rule = dataset.pp.save_rule
    if rule not in SAVE_RULES:
        raise ValueError(f"the preprocessing spec has save_rule {rule!r}; expected one of {sorted(SAVE_RULES)}")
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    amp_dtype = _amp_dtype(amp, device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=sod_collate)
    names = []
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        img = batch["image"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(img)
        sal = model.saliency(_to_float(outputs)).float().cpu()
        for i, name in enumerate(batch["name"]):
            write_map(os.path.join(out_dir, f"{name}.png"), saliency_to_uint8(sal[i, 0], batch["orig_size"][i], rule))
            names.append(name)
    return names


def model_kwargs(cfg: CfgNode) -> dict:
    """Constructor arguments for MODEL.NAME: MODEL.KWARGS, plus ``backbone_weights=MODEL.BACKBONE_WEIGHTS`` for
    models with an ImageNet backbone unless MODEL.WEIGHTS gives the whole model."""
    kw = dict(cfg.MODEL.KWARGS)
    if not get_sod_spec(cfg.MODEL.NAME).imagenet_backbone:
        return kw
    if "backbone_weights" in kw:
        raise ValueError("MODEL.KWARGS.backbone_weights: set MODEL.BACKBONE_WEIGHTS instead")
    if cfg.MODEL.WEIGHTS:
        return kw
    if not cfg.MODEL.BACKBONE_WEIGHTS:
        warnings.warn(f"MODEL.BACKBONE_WEIGHTS is empty: the {cfg.MODEL.NAME} backbone starts from random weights "
                      "(the released training starts it from the ImageNet MSRA ResNet-50)")
        return kw
    kw["backbone_weights"] = cfg.MODEL.BACKBONE_WEIGHTS
    return kw


class SODTrainer:
    """Train / evaluate one SOD model from a SOD config (:func:`cardd_sod.config.setup_sod_cfg`).

    What differs between models comes from the model's :class:`~cardd_sod.models.SODModelSpec`
    (``get_sod_spec(MODEL.NAME)``): preprocessing, loss, iter_size, optimizer parameter groups.  ``model`` /
    ``loss_fn`` may be injected; ``loss_fn(outputs, target, edge=None, model=None) -> (loss, terms)`` returns the
    loss of one batch already divided by the accumulation count (as :class:`cardd_sod.losses.SODLoss` does)."""

    def __init__(self, cfg: CfgNode, model: Optional[torch.nn.Module] = None,
                 loss_fn: Optional[Callable] = None, progress: bool = True):
        self.cfg = cfg
        self.spec = get_sod_spec(cfg.MODEL.NAME)
        self.device = resolve_device(cfg.MODEL.DEVICE)
        self.progress = progress
        self._seed_all(int(cfg.SEED))
        if model is None:
            model = build_sod_model(cfg.MODEL.NAME, **model_kwargs(cfg))
        self.model = model.to(self.device)
        self.iter_size = int(cfg.SOLVER.ITER_SIZE) or self.spec.iter_size
        self.loss_fn = loss_fn or build_sod_loss(self.spec.loss, iter_size=self.iter_size)
        self.preprocess = build_preprocess(cfg)
        self.epoch = 0          # completed epochs
        self.iter = 0           # optimizer steps
        self.batches = 0        # batches seen (accumulation counter)
        self.optimizer = self.build_optimizer()
        self.amp_dtype = _amp_dtype(cfg.SOLVER.AMP, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.output_dir = cfg.OUTPUT_DIR
        self.ckpt_dir = os.path.join(self.output_dir, "checkpoints")
        self.writer = None
        if cfg.MODEL.WEIGHTS:
            self.load_weights(cfg.MODEL.WEIGHTS)

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _seed_all(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % (2 ** 32))
        torch.manual_seed(seed)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the trainable parameters, in the model spec's parameter groups when it declares them."""
        s = self.cfg.SOLVER
        if s.OPTIMIZER.lower() != "adam":
            raise ValueError(f"SOLVER.OPTIMIZER {s.OPTIMIZER!r}: only 'adam' (paper Table VII)")
        wd = float(s.WEIGHT_DECAY)
        if self.spec.param_groups is not None:
            params = self.spec.param_groups(self.model, wd)
        else:
            params = [{"params": [p for p in self.model.parameters() if p.requires_grad], "weight_decay": wd}]
        opt = torch.optim.Adam(params, lr=float(s.BASE_LR), betas=tuple(float(b) for b in s.BETAS),
                               eps=float(s.EPS))
        for g in opt.param_groups:
            g["lr"] = self.lr_at(self.epoch)
        return opt

    def build_train_dataset(self) -> CarDDSODDataset:
        d = self.cfg.DATA
        return CarDDSODDataset(d.ROOT, d.TRAIN_SPLIT, self.preprocess, train=True, seed=int(self.cfg.SEED),
                               strict_masks=bool(d.STRICT_MASKS), max_images=int(d.MAX_TRAIN_IMAGES))

    def build_test_dataset(self, split: Optional[str] = None) -> CarDDSODDataset:
        d = self.cfg.DATA
        return CarDDSODDataset(d.ROOT, split or d.TEST_SPLIT, self.preprocess, train=False,
                               seed=int(self.cfg.SEED), strict_masks=bool(d.STRICT_MASKS),
                               max_images=int(d.MAX_TEST_IMAGES))

    def build_train_loader(self, dataset: CarDDSODDataset) -> DataLoader:
        sampler = EpochShuffleSampler(len(dataset), seed=int(self.cfg.SEED), shuffle=self.spec.shuffle)
        return DataLoader(dataset, batch_size=int(self.cfg.SOLVER.BATCH_SIZE), sampler=sampler,
                          num_workers=int(self.cfg.DATA.NUM_WORKERS), collate_fn=sod_collate,
                          pin_memory=self.device.type == "cuda", drop_last=False)

    def load_weights(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MODEL.WEIGHTS not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        self.model.load_state_dict(state)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        pending = None
        if self.batches % self.iter_size != 0:
            pending = [None if p.grad is None else p.grad.detach().cpu().clone()
                       for p in self.model.parameters()]
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "iter": self.iter, "batches": self.batches, "pending_grads": pending,
            "rng": rng, "cfg": self.cfg.dump(),
        }

    def save_checkpoint(self, name: Optional[str] = None) -> str:
        os.makedirs(self.ckpt_dir, exist_ok=True)
        name = name or f"epoch_{self.epoch:04d}.pth"
        path = os.path.join(self.ckpt_dir, name)
        atomic_torch_save(self.checkpoint_state(), path)
        with atomic_open(os.path.join(self.ckpt_dir, "last_checkpoint")) as f:
            f.write(name)
        return path

    def last_checkpoint(self) -> Optional[str]:
        marker = os.path.join(self.ckpt_dir, "last_checkpoint")
        if not os.path.isfile(marker):
            return None
        with open(marker) as f:
            path = os.path.join(self.ckpt_dir, f.read().strip())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{marker} names a missing checkpoint: {path}")
        return path

    def load_checkpoint(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        ck = torch.load(path, map_location="cpu", weights_only=False)
        for key in ("model", "optimizer", "epoch", "iter"):
            if key not in ck:
                raise ValueError(f"{path}: not a SOD trainer checkpoint (missing {key!r})")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.epoch, self.iter, self.batches = int(ck["epoch"]), int(ck["iter"]), int(ck.get("batches", 0))
        pending = ck.get("pending_grads")
        for p in self.model.parameters():
            p.grad = None
        if pending is not None:
            for p, g in zip(self.model.parameters(), pending):
                p.grad = None if g is None else g.to(self.device)
        rng = ck.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "numpy" in rng:
            np.random.set_state(rng["numpy"])
        if "python" in rng:
            random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def resume_or_load(self, resume: bool = True) -> bool:
        """Load the last checkpoint of OUTPUT_DIR when ``resume``; returns whether one was loaded."""
        if not resume:
            return False
        path = self.last_checkpoint()
        if path is None:
            return False
        self.load_checkpoint(path)
        logger.info("resumed from %s (epoch %d, iter %d)", path, self.epoch, self.iter)
        return True

    # ------------------------------------------------------------------ training
    def train(self, resume: bool = False, evaluate: Optional[bool] = None) -> dict:
        """Train to SOLVER.EPOCHS (continuing from the last checkpoint when ``resume``); optionally evaluate."""
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "config.yaml"), "w") as f:
            f.write(self.cfg.dump())
        self.resume_or_load(resume)
        loader = self.build_train_loader(self.build_train_dataset())
        self.writer = _open_writer(os.path.join(self.output_dir, "tb"), self.batches)
        history = []
        self.model.train()
        try:
            while self.epoch < int(self.cfg.SOLVER.EPOCHS) and not self._max_iter_reached():
                history.append(self.run_epoch(loader))
                self.after_epoch(history[-1])
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        torch.save(self.model.state_dict(), os.path.join(self.output_dir, "model_final.pth"))
        result = {"epochs": self.epoch, "iter": self.iter, "history": history}
        if self.cfg.TEST.EVAL_AT_END if evaluate is None else evaluate:
            result["metrics"] = self.evaluate()
        return result

    def _max_iter_reached(self) -> bool:
        max_iter = int(self.cfg.SOLVER.MAX_ITER)
        return max_iter > 0 and self.iter >= max_iter

    def run_epoch(self, loader: DataLoader) -> dict:
        """One pass over the training data (stops early at SOLVER.MAX_ITER); returns the epoch's summary."""
        self.before_epoch()
        loader.sampler.set_epoch(self.epoch)
        loader.dataset.set_epoch(self.epoch)
        run_loss, n = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{self.cfg.SOLVER.EPOCHS}", disable=not self.progress,
                   leave=False)
        for batch in bar:
            loss, terms = self.run_step(batch)
            run_loss += loss
            n += 1
            self.after_step(loss, terms)
            bar.set_postfix(loss=f"{run_loss / n:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.1e}")
            if self._max_iter_reached():
                break
        self.epoch += 1
        return {"epoch": self.epoch, "iter": self.iter, "loss": run_loss / max(n, 1),
                "lr": self.optimizer.param_groups[0]["lr"]}

    def lr_at(self, epoch: int) -> float:
        """Learning rate of the epoch that starts after ``epoch`` completed epochs."""
        s = self.cfg.SOLVER
        return float(s.BASE_LR) * float(s.GAMMA) ** sum(epoch >= int(m) for m in s.LR_STEPS)

    def before_epoch(self) -> None:
        """The epoch's learning rate (a fresh Adam at a drop with RESET_OPTIMIZER_AT_STEPS); pending gradients
        dropped with DISCARD_PENDING_GRADS."""
        s = self.cfg.SOLVER
        if s.DISCARD_PENDING_GRADS:
            self.optimizer.zero_grad(set_to_none=True)
        if s.RESET_OPTIMIZER_AT_STEPS and self.epoch in [int(m) for m in s.LR_STEPS]:
            self.optimizer = self.build_optimizer()
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.epoch)

    def run_step(self, batch: dict):
        """Forward, loss, backward of one batch; an optimizer step every ``iter_size`` batches.
        Returns (loss as float, detached loss terms)."""
        batch = {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.model(batch["image"])
        res = self.loss_fn(_to_float(outputs), batch["mask"], edge=batch.get("edge"), model=self.model)
        loss, terms = res if isinstance(res, tuple) else (res, {})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {self.epoch + 1}, "
                                     f"iter {self.iter}, images {batch['name']}")
        self.scaler.scale(loss).backward()
        self.batches += 1
        if self.batches % self.iter_size == 0:
            self._optimizer_step()
        return float(loss.detach()), dict(terms or {})

    def _optimizer_step(self) -> None:
        s = self.cfg.SOLVER
        if s.CLIP_GRAD_NORM and s.CLIP_GRAD_NORM > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(s.CLIP_GRAD_NORM))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter += 1

    def after_step(self, loss: float, terms: dict) -> None:
        """TensorBoard scalars every SOLVER.LOG_PERIOD batches."""
        if self.writer is None or self.batches % max(1, int(self.cfg.SOLVER.LOG_PERIOD)) != 0:
            return
        self.writer.add_scalar("train/loss", loss, self.batches)
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.batches)
        for k, v in terms.items():
            self.writer.add_scalar(f"train/{k}", float(v.detach() if isinstance(v, torch.Tensor) else v),
                                   self.batches)

    def after_epoch(self, summary: dict) -> None:
        """Epoch log, checkpoint."""
        if self.writer is not None:
            self.writer.add_scalar("train/epoch_loss", summary["loss"], self.epoch)
        logger.info("epoch %d: loss %.5f (iter %d)", self.epoch, summary["loss"], self.iter)
        period = int(self.cfg.SOLVER.CHECKPOINT_PERIOD)
        if period > 0 and (self.epoch % period == 0 or self.epoch == int(self.cfg.SOLVER.EPOCHS)
                           or self._max_iter_reached()):
            self.save_checkpoint()

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, split: Optional[str] = None, out_dir: Optional[str] = None) -> dict:
        """Write predicted maps for the test split and score them; writes metrics JSON + Markdown."""
        split = split or self.cfg.DATA.TEST_SPLIT
        dataset = self.build_test_dataset(split)
        out_dir = out_dir or os.path.join(self.output_dir, "predictions", os.path.basename(
            sod_split_dirs(self.cfg.DATA.ROOT, split)["root"]))
        names = predict_saliency_maps(self.model, dataset, out_dir, self.device,
                                      batch_size=int(self.cfg.TEST.BATCH_SIZE), amp=self.cfg.SOLVER.AMP,
                                      progress=self.progress)
        gt_dir = sod_split_dirs(self.cfg.DATA.ROOT, split)["mask"]
        metrics = evaluate_saliency(out_dir, gt_dir, names=names)
        metrics.update({"model": self.cfg.MODEL.NAME, "split": split, "pred_dir": out_dir})
        write_results(metrics, os.path.join(self.output_dir, "metrics"), name=f"sod_metrics_{split}",
                      row=self.cfg.MODEL.NAME)
        self.model.train()
        return metrics
