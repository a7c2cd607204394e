"""Reading an mmdetection 2.x checkpoint file into a flat ``{key: tensor}`` state dict."""
from __future__ import annotations

import os
from collections import OrderedDict

import torch

__all__ = ["AUTHOR", "MmdetConversionError", "extract_state_dict", "load_mmdet_state_dict"]

# Written into converted checkpoints; a file carrying it is refused as a source (converting twice is a mistake).
AUTHOR = "cardd-convert-mmdet"


class MmdetConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file (when known) and the problem."""


def load_mmdet_state_dict(path: str, *, trust_pickle: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """Read an mmdet ``.pth`` (``{"meta", "state_dict", "optimizer"}`` or a raw state dict).

    Loads with ``weights_only=True``; ``trust_pickle=True`` allows full unpickling for files whose metadata
    holds arbitrary Python objects (only for files you trust).
    """
    if not os.path.isfile(path):
        raise MmdetConversionError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and the way out
        hint = "" if trust_pickle else " (if you trust the file, retry with --trust-pickle)"
        raise MmdetConversionError(f"{path}: cannot be read as a PyTorch checkpoint: {e}{hint}") from e
    return extract_state_dict(obj, source=path)


def extract_state_dict(obj, source: str = "<checkpoint>") -> "OrderedDict[str, torch.Tensor]":
    """The tensors of an mmdet checkpoint object (its ``state_dict``, or the object itself), without a
    DataParallel ``module.`` prefix."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        if obj.get("__author__") == AUTHOR:
            raise MmdetConversionError(f"{source}: already a converted detectron2 checkpoint")
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise MmdetConversionError(f"{source}: no state dict found (expected a dict with 'state_dict')")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise MmdetConversionError(f"{source}: entries that are not tensors: {bad[:10]}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return OrderedDict(obj)
