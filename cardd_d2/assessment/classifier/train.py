"""Fine-tuning (all layers, cross-entropy, SGD), resumable from ``last.pth``; prediction and evaluation."""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from .metrics import binary_metrics
from .model import DAMAGED, build_classifier, read_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["evaluate_classifier", "predict_proba", "train_classifier"]


@torch.no_grad()
def predict_proba(model: nn.Module, loader, device="cpu", progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """P(damaged) for every sample of ``loader`` and the labels."""
    from tqdm import tqdm

    model.eval()
    probs, labels = [], []
    for x, y in tqdm(loader, desc="classifier eval", disable=not progress, leave=False):
        p = torch.softmax(model(x.to(device)), dim=1)[:, DAMAGED]
        probs.append(p.cpu().numpy())
        labels.append(np.asarray(y))
    if not probs:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(labels)


def evaluate_classifier(model: nn.Module, dataset, batch_size: int = 16, device="cpu", num_workers: int = 0,
                        progress: bool = False, decision_threshold: float = 0.5) -> dict:
    """Metrics of :func:`binary_metrics` on ``dataset``; predicted damaged when P(damaged) >= decision_threshold."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    probs, labels = predict_proba(model, loader, device=device, progress=progress)
    return binary_metrics(labels, (probs >= decision_threshold).astype(np.int64))


def train_classifier(
    train_set,
    output_dir: str,
    *,
    arch: str = "vgg16",
    pretrained: Optional[str] = None,
    input_size: int = 224,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    val_set=None,
    resume: bool = False,
    device: str = "cpu",
    num_workers: int = 0,
    seed: int = 0,
    progress: bool = True,
    max_iters_per_epoch: Optional[int] = None,
) -> Tuple[nn.Module, dict]:
    """Fine-tune all layers with cross-entropy and SGD; writes ``last.pth`` after every epoch and ``model_final.pth``.

    With ``resume=True`` training continues from ``output_dir/last.pth`` (model, optimiser and epoch counter).
    Returns (model, history) where history has per-epoch loss and (when ``val_set`` is given) validation metrics.
    """
    from tqdm import tqdm

    torch.manual_seed(seed)
    os.makedirs(output_dir, exist_ok=True)
    last = os.path.join(output_dir, "last.pth")
    model = build_classifier(arch, pretrained=pretrained).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    start_epoch, history = 0, {"epochs": []}
    if resume and os.path.isfile(last):
        ckpt = read_checkpoint(last)
        if ckpt.get("arch") != arch:
            raise ValueError(f"cannot resume: {last} is a {ckpt.get('arch')} checkpoint, not {arch}")
        model.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:
            opt.load_state_dict(ckpt["optimizer"])
        start_epoch = int(ckpt["epoch"]) + 1
        history = ckpt.get("history", history)
        logger.info("resumed from %s at epoch %d", last, start_epoch)
    g = torch.Generator()
    g.manual_seed(seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         generator=g, drop_last=False)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start_epoch, epochs):
        g.manual_seed(seed + epoch)  # same shuffling with or without resume
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for it, (x, y) in enumerate(bar):
            if max_iters_per_epoch is not None and it >= max_iters_per_epoch:
                break
            x, y = x.to(device), torch.as_tensor(y).to(device)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"classifier loss is {loss.item()} at epoch {epoch + 1}, iteration {it}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / max(1, count):.4f}")
        rec = {"epoch": epoch + 1, "loss": total / max(1, count)}
        if val_set is not None and len(val_set):
            rec["val"] = evaluate_classifier(model, val_set, batch_size=batch_size, device=device,
                                             num_workers=num_workers)
        history["epochs"].append(rec)
        logger.info("classifier epoch %d: %s", epoch + 1, rec)
        save_checkpoint(last, model, arch, input_size, epoch, optimizer=opt, extra={"history": history})
    save_checkpoint(os.path.join(output_dir, "model_final.pth"), model, arch, input_size, max(0, epochs - 1),
                    extra={"history": history})
    return model, history
