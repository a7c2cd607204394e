"""Binary damaged / undamaged image classifier (CarDD paper, Section IV), torchvision only.

Paper setting: VGG16 pretrained on ImageNet with a 2-way head, all layers fine-tuned with cross-entropy, lr 0.001,
batch 16, 10 epochs (500 + 500 training images, 500 + 500 test images). The optimiser is not named in the paper; we use
SGD with momentum 0.9 and no weight decay by default.

Class indices: 0 = undamaged, 1 = damaged (``CLASS_NAMES``). "Positive" = damaged, so precision/recall are those of
the damaged class, FP = undamaged image predicted damaged, FN = damaged image predicted undamaged; the paper's FP/FN
figures are shares of the whole test set.
"""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

CLASS_NAMES = ("undamaged", "damaged")
UNDAMAGED, DAMAGED = 0, 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# "tiny" is a VGG-shaped network (3 conv blocks, 8/16/32 channels) meant for tests and smoke runs only.
ARCHS = ("vgg16", "vgg16_bn", "vgg11", "tiny")
_TINY_CFG = [8, "M", 16, "M", 32, "M"]


class _TinyVGG(nn.Module):
    """VGG layout (features -> pool -> classifier) at toy size; torchvision's VGG class would first allocate its
    25088x4096 head."""

    def __init__(self, features: nn.Module, num_classes: int):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 32), nn.ReLU(True), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def build_classifier(arch: str = "vgg16", num_classes: int = 2, weights: Optional[str] = None) -> nn.Module:
    """A VGG classifier with a ``num_classes``-way last layer; every parameter trainable.

    ``weights``: None/""/"none" = random init; "imagenet" = torchvision's ImageNet weights, only if already in the
    torch hub cache (never downloaded here); any other string = path to a torchvision-format VGG state dict (ImageNet
    head dropped) or to a checkpoint written by :func:`save_checkpoint`.
    """
    from torchvision.models import vgg as tv_vgg

    if arch == "tiny":
        if weights and weights.lower() == "imagenet":
            raise ValueError("there are no ImageNet weights for the 'tiny' test architecture")
        model = _TinyVGG(tv_vgg.make_layers(_TINY_CFG, batch_norm=False), num_classes)
    elif arch in ("vgg16", "vgg16_bn", "vgg11"):
        state = _imagenet_state_dict(arch, weights) if weights and weights.lower() != "none" else None
        model = getattr(tv_vgg, arch)(weights=None, num_classes=1000)
        if state is not None:  # ImageNet weights: everything but the 1000-way layer, which is replaced below
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("classifier.6.")]
            if unexpected or missing:
                raise ValueError(f"weights {weights!r} do not match {arch}: missing {missing}, unexpected "
                                 f"{unexpected}")
            weights = None  # consumed
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    else:
        raise ValueError(f"unknown classifier arch {arch!r}; choose one of {ARCHS}")
    if weights and weights.lower() != "none":
        # A checkpoint of this very model (2-way head).
        ckpt = torch.load(weights, map_location="cpu", weights_only=False)
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
        model.load_state_dict(state)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _torchvision_weights_enum(arch: str):
    from torchvision.models import vgg as tv_vgg

    return {"vgg16": tv_vgg.VGG16_Weights, "vgg16_bn": tv_vgg.VGG16_BN_Weights, "vgg11": tv_vgg.VGG11_Weights}[arch]


def imagenet_cache_path(arch: str = "vgg16") -> str:
    """Where torchvision's ImageNet weights for ``arch`` would be in the torch hub cache."""
    url = _torchvision_weights_enum(arch).IMAGENET1K_V1.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _imagenet_state_dict(arch: str, weights: str):
    """ImageNet (1000-class) state dict from the hub cache or a file, or None when ``weights`` is a 2-way checkpoint."""
    if weights.lower() == "imagenet":
        path = imagenet_cache_path(arch)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"ImageNet weights for {arch} are not in torchvision's cache ({path}). Download them once with "
                f"torchvision (e.g. torchvision.models.{arch}(weights='IMAGENET1K_V1')) or pass the .pth path.")
    else:
        path = weights
        if not os.path.isfile(path):
            raise FileNotFoundError(f"classifier weights not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return None  # our own checkpoint
    state = obj
    head_w = state.get("classifier.6.weight")
    if head_w is not None and head_w.shape[0] != 1000:
        return None  # already a fine-tuned 2-way state dict
    return {k: v for k, v in state.items() if not k.startswith("classifier.6.")}


def build_transform(input_size: int = 224, train: bool = False, hflip: bool = True):
    """Resize to a square ``input_size`` (aspect ratio not kept), optional horizontal flip, ImageNet normalisation."""
    from torchvision import transforms as T

    ops = [T.Resize((input_size, input_size))]
    if train and hflip:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


# --------------------------------------------------------------------------------------------------------- datasets
def folder_items(root: str) -> List[Tuple[str, int]]:
    """``root/damaged/*`` (label 1) and ``root/undamaged/*`` (label 0); image files only, recursive."""
    from .images import IMAGE_EXTENSIONS

    items = []
    for sub, label in (("undamaged", UNDAMAGED), ("damaged", DAMAGED)):
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            raise FileNotFoundError(f"classifier dataset folder {root!r} has no '{sub}/' subfolder")
        for r, _, names in os.walk(d):
            for n in sorted(names):
                if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."):
                    items.append((os.path.join(r, n), label))
    if not items:
        raise ValueError(f"no images found under {root}/damaged or {root}/undamaged")
    return sorted(items)


def coco_items(json_file: str, image_root: str, undamaged_dir: Optional[str] = None,
               unannotated: str = "skip") -> List[Tuple[str, int]]:
    """Images of a COCO json with at least one annotation are damaged; ``undamaged_dir`` images are undamaged.

    ``unannotated``: what to do with json images without annotations: "skip" (default) or "undamaged".
    """
    if unannotated not in ("skip", "undamaged"):
        raise ValueError("unannotated must be 'skip' or 'undamaged'")
    with open(json_file, "r", encoding="utf-8") as f:
        data = json.load(f)
    annotated = {a["image_id"] for a in data.get("annotations", [])}
    items = []
    for im in data.get("images", []):
        path = os.path.join(image_root, im["file_name"])
        if im["id"] in annotated:
            items.append((path, DAMAGED))
        elif unannotated == "undamaged":
            items.append((path, UNDAMAGED))
    if undamaged_dir:
        from .images import IMAGE_EXTENSIONS

        for r, _, names in os.walk(undamaged_dir):
            for n in sorted(names):
                if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."):
                    items.append((os.path.join(r, n), UNDAMAGED))
    if not items:
        raise ValueError(f"no classifier images from {json_file} / {undamaged_dir}")
    return items


class BinaryDamageDataset(torch.utils.data.Dataset):
    """(image tensor, label) pairs from a list of (path, label); images read with :func:`load_image`."""

    def __init__(self, items: Sequence[Tuple[str, int]], transform=None, check_images: bool = False):
        self.items = list(items)
        self.transform = transform or build_transform()
        self.skipped: List[Tuple[str, str]] = []
        if check_images:
            from PIL import Image

            good = []
            for path, label in self.items:
                try:
                    with Image.open(path) as im:
                        im.verify()
                    good.append((path, label))
                except Exception as e:  # noqa: BLE001 - any decoder error means "skip this file"
                    self.skipped.append((path, f"{type(e).__name__}: {e}"))
                    logger.warning("classifier dataset: skipping %s (%s)", path, e)
            self.items = good

    def __len__(self):
        return len(self.items)

    def labels(self) -> np.ndarray:
        return np.array([lab for _, lab in self.items], dtype=np.int64)

    def __getitem__(self, idx):
        from PIL import Image

        from .images import load_image

        path, label = self.items[idx]
        img = load_image(path)
        pil = Image.fromarray(np.ascontiguousarray(img.bgr[:, :, ::-1]))
        return self.transform(pil), int(label)


# ---------------------------------------------------------------------------------------------------------- metrics
def binary_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict:
    """Accuracy, precision, recall (damaged = positive) and FP/FN as shares of the test set; confusion [[TN,FP],[FN,TP]]."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = int(len(y_true))
    tp = int(((y_true == 1) & (y_pred == 1)).sum())
    tn = int(((y_true == 0) & (y_pred == 0)).sum())
    fp = int(((y_true == 0) & (y_pred == 1)).sum())
    fn = int(((y_true == 1) & (y_pred == 0)).sum())
    div = lambda a, b: float(a) / b if b else 0.0  # noqa: E731
    return {
        "n": n, "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "accuracy": div(tp + tn, n), "precision": div(tp, tp + fp), "recall": div(tp, tp + fn),
        "fp_share": div(fp, n), "fn_share": div(fn, n),
        "confusion": [[tn, fp], [fn, tp]],
    }


# Paper, Section IV (500 + 500 test images).
PAPER_CLASSIFIER_METRICS = {"accuracy": 0.943, "precision": 0.916, "recall": 0.976, "fp_share": 0.045, "fn_share": 0.012}


def format_metrics(m: dict, with_paper: bool = True) -> str:
    rows = [("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"),
            ("fp_share", "FP (share of test set)"), ("fn_share", "FN (share of test set)")]
    lines = [f"{'metric':<24}{'ours':>8}" + (f"{'paper':>8}" if with_paper else "")]
    for k, label in rows:
        line = f"{label:<24}{100 * m[k]:>7.1f}%"
        if with_paper:
            line += f"{100 * PAPER_CLASSIFIER_METRICS[k]:>7.1f}%"
        lines.append(line)
    lines.append(f"(n={m['n']}: TP {m['tp']}, TN {m['tn']}, FP {m['fp']}, FN {m['fn']})")
    return "\n".join(lines)


def save_confusion_png(confusion, path: str, class_names: Sequence[str] = CLASS_NAMES) -> str:
    """Save a 2x2 confusion matrix (rows = true, columns = predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), labels=list(class_names))
    ax.set_yticks(range(len(class_names)), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thr = cm.max() / 2.0 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if cm[i, j] > thr else "black")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------- train / evaluate
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


def save_checkpoint(path: str, model: nn.Module, arch: str, input_size: int, epoch: int, optimizer=None,
                    extra: Optional[dict] = None) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    obj = {"model": model.state_dict(), "arch": arch, "input_size": int(input_size), "epoch": int(epoch),
           "class_names": list(CLASS_NAMES)}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    if extra:
        obj.update(extra)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_classifier_checkpoint(path: str, device="cpu") -> Tuple[nn.Module, dict]:
    """Rebuild the classifier saved by :func:`save_checkpoint`; returns (model in eval mode, checkpoint dict)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
        raise ValueError(f"{path} is not a cardd classifier checkpoint (expected keys 'model' and 'arch')")
    model = build_classifier(ckpt["arch"], num_classes=len(ckpt.get("class_names", CLASS_NAMES)))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def train_classifier(
    train_set,
    output_dir: str,
    *,
    arch: str = "vgg16",
    weights: Optional[str] = None,
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
    model = build_classifier(arch, weights=weights).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    start_epoch, history = 0, {"epochs": []}
    if resume and os.path.isfile(last):
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
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
