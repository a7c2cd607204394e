"""The classifier network and its checkpoints.

Class indices: 0 = undamaged, 1 = damaged (``CLASS_NAMES``). A checkpoint (:func:`save_checkpoint`) is a dict with
``model`` (state dict), ``arch``, ``input_size``, ``epoch``, ``class_names`` and optionally ``optimizer`` and
``history``: tensors, numbers and strings only, so every file is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import nn

from cardd_sod.fileio import atomic_torch_save

__all__ = ["ARCHS", "CLASS_NAMES", "DAMAGED", "IMAGENET_MEAN", "IMAGENET_STD", "UNDAMAGED", "build_classifier",
           "imagenet_cache_path", "load_classifier_checkpoint", "read_checkpoint", "save_checkpoint"]

CLASS_NAMES = ("undamaged", "damaged")
UNDAMAGED, DAMAGED = 0, 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# "tiny" is a VGG-shaped network (3 conv blocks, 8/16/32 channels) meant for tests and smoke runs only.
ARCHS = ("vgg16", "vgg16_bn", "vgg11", "tiny")
_TINY_CFG = [8, "M", 16, "M", 32, "M"]
_IMAGENET_HEAD = "classifier.6."


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


def _load(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file; weights_only refuses arbitrary Python objects
        raise ValueError(f"{path}: cannot be read as a {what} (torch.load(weights_only=True): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def read_checkpoint(path: str) -> dict:
    """A checkpoint written by :func:`save_checkpoint`, read once and safely."""
    ckpt = _load(path, "classifier checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
        raise ValueError(f"{path} is not a cardd classifier checkpoint (expected keys 'model' and 'arch')")
    return ckpt


def imagenet_cache_path(arch: str = "vgg16") -> str:
    """Where torchvision's ImageNet weights for ``arch`` would be in the torch hub cache."""
    from torchvision.models import vgg as tv_vgg

    enum = {"vgg16": tv_vgg.VGG16_Weights, "vgg16_bn": tv_vgg.VGG16_BN_Weights, "vgg11": tv_vgg.VGG11_Weights}[arch]
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.IMAGENET1K_V1.url))


def _imagenet_state_dict(arch: str, pretrained: str) -> dict:
    """The 1000-class ImageNet state dict of ``arch`` without its last layer (from torchvision's cache or a file)."""
    if pretrained.lower() == "imagenet":
        path = imagenet_cache_path(arch)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"ImageNet weights for {arch} are not in torchvision's cache ({path}). Download them once with "
                f"torchvision (e.g. torchvision.models.{arch}(weights='IMAGENET1K_V1')) or pass the .pth path.")
    else:
        path = pretrained
    state = _load(path, "pretrained weights file")
    head = state.get(_IMAGENET_HEAD + "weight") if isinstance(state, dict) else None
    if head is None or head.shape[0] != 1000:
        raise ValueError(f"{path} is not a torchvision ImageNet {arch} state dict (no 1000-way '{_IMAGENET_HEAD}' "
                         "layer); a classifier checkpoint goes to checkpoint=, not pretrained=")
    return {k: v for k, v in state.items() if not k.startswith(_IMAGENET_HEAD)}


def build_classifier(arch: str = "vgg16", num_classes: int = 2, pretrained: Optional[str] = None,
                     checkpoint: Optional[str] = None) -> nn.Module:
    """A VGG classifier with a ``num_classes``-way last layer; every parameter trainable.

    ``pretrained``: None = random init; "imagenet" = torchvision's ImageNet weights, only if already in the torch hub
    cache (never downloaded here); a path = a torchvision-format ImageNet state dict. The 1000-way layer is replaced.
    ``checkpoint``: a file written by :func:`save_checkpoint` (or a plain state dict of this model) to load instead.
    """
    from torchvision.models import vgg as tv_vgg

    if pretrained and checkpoint:
        raise ValueError("give pretrained= (ImageNet initialisation) or checkpoint= (a trained classifier), not both")
    if arch == "tiny":
        if pretrained:
            raise ValueError("there are no ImageNet weights for the 'tiny' test architecture")
        model = _TinyVGG(tv_vgg.make_layers(_TINY_CFG, batch_norm=False), num_classes)
    elif arch in ("vgg16", "vgg16_bn", "vgg11"):
        model = getattr(tv_vgg, arch)(weights=None, num_classes=1000)
        if pretrained:
            state = _imagenet_state_dict(arch, pretrained)
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith(_IMAGENET_HEAD)]
            if unexpected or missing:
                raise ValueError(f"weights {pretrained!r} do not match {arch}: missing {missing}, unexpected "
                                 f"{unexpected}")
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    else:
        raise ValueError(f"unknown classifier arch {arch!r}; choose one of {ARCHS}")
    if checkpoint:
        obj = _load(checkpoint, "classifier checkpoint")
        model.load_state_dict(obj["model"] if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_checkpoint(path: str, model: nn.Module, arch: str, input_size: int, epoch: int, optimizer=None,
                    extra: Optional[dict] = None) -> str:
    obj = {"model": model.state_dict(), "arch": arch, "input_size": int(input_size), "epoch": int(epoch),
           "class_names": list(CLASS_NAMES)}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    if extra:
        obj.update(extra)
    return atomic_torch_save(obj, path)


def load_classifier_checkpoint(path: str, device="cpu") -> Tuple[nn.Module, dict]:
    """Rebuild the classifier saved by :func:`save_checkpoint`; returns (model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    model = build_classifier(ckpt["arch"], num_classes=len(ckpt.get("class_names", CLASS_NAMES)))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
