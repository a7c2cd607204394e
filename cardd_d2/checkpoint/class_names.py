"""Class names that travel with a detector checkpoint, and the checks that keep them consistent.

Every ``.pth`` that ``tools/train_net.py`` saves carries ``THING_CLASSES_KEY`` (the training dataset's
``thing_classes``, a list of str) next to ``model``. Inference reads the names back with
:func:`read_checkpoint_info`, so a model is always labelled with the names it was trained with; a checkpoint whose
names (or whose box predictor) disagree with ``MODEL.ROI_HEADS.NUM_CLASSES`` or with a dataset is an error that names
both sides. Files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings and numpy arrays only.
Detectron2 / Caffe2 ``.pkl`` files carry no names and are not unpickled here.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

__all__ = [
    "THING_CLASSES_KEY",
    "CLASS_NAMES_KEY",
    "CheckpointError",
    "ClassNamesError",
    "CheckpointInfo",
    "read_checkpoint_info",
    "num_classes_key",
    "check_num_classes",
    "check_same_names",
    "fallback_class_names",
    "resolve_class_names",
]

# Top-level key of a checkpoint dict that holds the model's class names (contiguous id order).
THING_CLASSES_KEY = "thing_classes"
# Config key that sets the class names explicitly (overrides what the checkpoint says).
CLASS_NAMES_KEY = "MODEL.CLASS_NAMES"

# detectron2's box predictor (plain and per cascade stage): K + 1 outputs (K classes + background).
_CLS_SCORE = re.compile(r"^(module\.)?roi_heads\.box_predictor\.(\d+\.)?cls_score\.weight$")


class CheckpointError(ValueError):
    """A weights file that is missing or cannot be read as a checkpoint."""


class ClassNamesError(ValueError):
    """Class names (or a class count) that disagree between a checkpoint, the config and a dataset."""


@dataclass
class CheckpointInfo:
    path: str
    thing_classes: Optional[List[str]]  # None: the checkpoint does not say
    num_classes: Optional[int]  # classes of the ROI box predictor in the state dict; None when it has none


def _safe_globals():
    """numpy arrays (RNG states, converted weights) are plain data; allow them next to tensors."""
    import numpy as np

    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct

    allowed = [np.ndarray, np.dtype, _reconstruct]
    allowed += [type(np.dtype(t)) for t in ("uint8", "int32", "int64", "uint32", "float32", "float64", "bool")]
    return allowed


def _torch_load(path: str):
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        if found:
            raise CheckpointError(
                f"{path}: not loaded: it holds a Python object ({found.group(1)}), not only tensors, numbers and "
                "strings, and is read with torch.load(weights_only=True)") from None
        why = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint (corrupt or not a checkpoint: "
                              f"{why.group(1).strip() if why else type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - any decoder error: name the file, no traceback for the user
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {msg})") from None


def _check_pickle_frame(path: str) -> None:
    """A pickle starts with the PROTO opcode (protocol >= 2) and ends with STOP: catches junk and truncated files
    without unpickling them."""
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(-1, os.SEEK_END)
        tail = f.read(1)
    if head[:1] != b"\x80" or tail != b".":
        raise CheckpointError(f"{path}: cannot be read as a pickled checkpoint (corrupt, truncated or not a pickle)")


def read_checkpoint_info(path: str) -> CheckpointInfo:
    """Class names and box-predictor class count of the checkpoint at ``path`` (cheap: tensors are memory-mapped).

    Raises :class:`CheckpointError` when the file is missing, empty or not a readable checkpoint.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: weights file not found")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a weights file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: empty weights file")
    if path.endswith(".pkl"):
        _check_pickle_frame(path)
        return CheckpointInfo(path, None, None)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(obj).__name__}, expected a dict with 'model')")
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    names = obj.get(THING_CLASSES_KEY)
    if names is not None:
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{path}: '{THING_CLASSES_KEY}' is not a list of class names: {names!r}")
        names = list(names)
    counts = {int(v.shape[0]) - 1 for k, v in state.items() if _CLS_SCORE.match(str(k)) and hasattr(v, "shape")}
    if len(counts) > 1:
        raise CheckpointError(f"{path}: its box predictors disagree on the number of classes: {sorted(counts)}")
    return CheckpointInfo(path, names, counts.pop() if counts else None)


def num_classes_key(cfg) -> Tuple[str, int]:
    """The config key that sets the model's class count, and its value."""
    if "RetinaNet" in str(cfg.MODEL.META_ARCHITECTURE):
        return "MODEL.RETINANET.NUM_CLASSES", int(cfg.MODEL.RETINANET.NUM_CLASSES)
    return "MODEL.ROI_HEADS.NUM_CLASSES", int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)


def check_num_classes(names: Sequence[str], source: str, cfg) -> None:
    """``names`` (from ``source``) must be as many as the model's classes."""
    key, k = num_classes_key(cfg)
    if len(names) != k:
        raise ClassNamesError(f"{source} has {len(names)} classes {list(names)} but {key} is {k}; "
                              f"set {key} {len(names)} or use the matching checkpoint")


def check_same_names(names_a: Sequence[str], source_a: str, names_b: Sequence[str], source_b: str) -> None:
    """The same names in the same (contiguous id) order, else :class:`ClassNamesError` naming both sources."""
    if list(names_a) != list(names_b):
        raise ClassNamesError(f"class names differ: {source_a} has {list(names_a)}, {source_b} has {list(names_b)}")


def _check_info(info: CheckpointInfo, cfg) -> None:
    if info.thing_classes is not None:
        check_num_classes(info.thing_classes, f"checkpoint {info.path}", cfg)
    key, k = num_classes_key(cfg)
    if info.num_classes is not None and info.num_classes != k:
        raise ClassNamesError(f"checkpoint {info.path} predicts {info.num_classes} classes but {key} is {k}; "
                              f"set {key} {info.num_classes}")


def fallback_class_names(cfg) -> Tuple[Optional[List[str]], str]:
    """Names of the config's first test (else train) dataset, when it is registered or is a CarDD split."""
    from detectron2.data import MetadataCatalog

    from cardd_sod.data.layout import DATASET_NAMES

    from cardd_d2.data.categories import CARDD_CLASS_NAMES

    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        if name in MetadataCatalog.list() and MetadataCatalog.get(name).get("thing_classes"):
            return list(MetadataCatalog.get(name).thing_classes), f"dataset {name}"
        if name in DATASET_NAMES.values():
            return list(CARDD_CLASS_NAMES), f"dataset {name}"
    return None, ""


def resolve_class_names(cfg, weights: Optional[str] = None) -> Tuple[List[str], str]:
    """The class names an inference run labels its predictions with, and where they came from.

    Order: ``MODEL.CLASS_NAMES`` (explicit), the checkpoint (``weights``, default ``cfg.MODEL.WEIGHTS``), and, only
    when the checkpoint has none, the config's dataset (with a warning). Raises :class:`CheckpointError` for an
    unreadable file and :class:`ClassNamesError` for a disagreement with ``NUM_CLASSES`` or for no names at all.
    """
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    info = read_checkpoint_info(weights) if weights else CheckpointInfo("", None, None)
    if weights:
        _check_info(info, cfg)
    explicit = list(cfg.MODEL.CLASS_NAMES)
    if explicit:
        check_num_classes(explicit, CLASS_NAMES_KEY, cfg)
        if info.thing_classes is not None and info.thing_classes != explicit:
            logger.warning("%s %s replaces the names stored in checkpoint %s: %s", CLASS_NAMES_KEY, explicit,
                           weights, info.thing_classes)
        return explicit, CLASS_NAMES_KEY
    if info.thing_classes is not None:
        return info.thing_classes, f"checkpoint {weights}"
    names, source = fallback_class_names(cfg)
    key, k = num_classes_key(cfg)
    if names is None or len(names) != k:
        why = f"{source} has {len(names)} classes" if names is not None else "the config names no known dataset"
        raise ClassNamesError(f"no class names for the {k} classes of {weights or 'the model'}: the checkpoint does "
                              f"not store them and {why}; set them with {CLASS_NAMES_KEY} "
                              f"(or --class-names NAME ...)")
    logger.warning("checkpoint %s stores no class names: using the names of %s (%s); set %s if they are not the "
                   "model's", weights or "(none)", source, ", ".join(names), CLASS_NAMES_KEY)
    return names, f"{source} (checkpoint has none)"
