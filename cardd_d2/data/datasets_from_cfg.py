"""The datasets a config names, registered and checked before anything is built or trained.

:func:`register_datasets_for_cfg` is what ``tools/train_net.py`` (and the other tools that train or evaluate) call
once the config is merged:

1. ``cardd_train`` / ``cardd_val`` / ``cardd_test`` are registered from ``DATASETS.ROOT`` (or ``$CARDD_DATASETS``);
2. every ``[name, json file, image folder]`` of ``DATASETS.REGISTER_COCO`` is registered with
   :func:`~cardd_d2.data.datasets.register_coco_damage` (your own COCO data, any classes and ids);
3. ``DATASETS.SKIP_INVALID`` / ``DATASETS.CHECK_IMAGES`` are applied to every dataset of ``DATASETS.TRAIN`` and
   ``DATASETS.TEST`` registered by cardd;
4. at start, not after training: each of those datasets must be registered, its json must exist and hold
   annotations, all of them must have the same classes (names in category-id order), ``MODEL.CLASS_NAMES`` (when
   set) must be those names, and the model's class count (``MODEL.ROI_HEADS.NUM_CLASSES``, or
   ``MODEL.RETINANET.NUM_CLASSES``) must be their number. A class count that the config file given on the command
   line and the overrides do not set (an inherited ``_BASE_`` value such as CarDD's 6) is taken from the data.
   Every failure is a :class:`~cardd_d2.data.validation.CarDDDataError` naming the dataset, the file and the key to
   set.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Collection, Dict, List, Optional, Sequence, Tuple

from cardd_sod.data.layout import COCO_DIR, DATASET_NAMES

from .datasets import _REGISTERED, _raise_if_no_annotations, _register, register_cardd, register_coco_damage
from .validation import CarDDDataError, json_categories, read_coco_json

__all__ = ["register_datasets_for_cfg", "config_keys_given"]

logger = logging.getLogger(__name__)

REGISTER_KEY = "DATASETS.REGISTER_COCO"


def config_keys_given(config_file: Optional[str], opts: Sequence[str] = ()) -> set:
    """Dotted keys that ``config_file`` itself (not its ``_BASE_`` files) or the ``opts`` (KEY VALUE ...) set."""
    import yaml

    keys = {str(k) for k in list(opts)[0::2]}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif k != "_BASE_":
                keys.add(f"{prefix}{k}")

    if config_file:
        with open(config_file, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        if isinstance(raw, dict):
            walk(raw, "")
    return keys


def _declared(cfg) -> List[Tuple[str, str, str]]:
    out = []
    for entry in cfg.DATASETS.REGISTER_COCO:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(v, str) for v in entry)):
            raise CarDDDataError(f"{REGISTER_KEY}: each entry is [name, json file, image folder] (three strings), "
                                 f"got {entry!r}")
        out.append(tuple(entry))
    return out


def register_datasets_for_cfg(cfg, cardd_root: Optional[str] = None, given_keys: Optional[Collection[str]] = None,
                              training: bool = True) -> List[str]:
    """Register and check the config's datasets (see the module docstring); returns the names checked.

    Args:
        cardd_root: the folder holding ``CarDD_COCO`` (a tool's ``--cardd-root``); overrides ``DATASETS.ROOT``.
        given_keys: config keys the user set (:func:`config_keys_given`); a class count not among them is taken from
            the data (the config must not be frozen then). None: every key counts as set.
        training: check ``DATASETS.TRAIN`` too (an evaluation-only run checks ``DATASETS.TEST`` alone).
    """
    from detectron2.data import DatasetCatalog

    skip, check = bool(cfg.DATASETS.SKIP_INVALID), bool(cfg.DATASETS.CHECK_IMAGES)
    train = list(dict.fromkeys(cfg.DATASETS.TRAIN)) if training else []
    names = list(dict.fromkeys(train + list(cfg.DATASETS.TEST)))
    root = cardd_root or cfg.DATASETS.ROOT or None
    if root or any(n in DATASET_NAMES.values() and n not in DatasetCatalog.list() for n in names):
        register_cardd(root, skip_invalid=skip, check_images=check)
    declared = {}
    for name, json_file, image_root in _declared(cfg):
        declared[name] = json_file
        register_coco_damage(name, json_file, image_root, skip_invalid=skip, check_images=check)
    for name in names:
        reg = _REGISTERED.get(name)
        if reg is None or name not in DatasetCatalog.list():
            if name in DatasetCatalog.list() and (skip or not check):
                logger.warning("dataset %s was not registered by cardd_d2.data: DATASETS.SKIP_INVALID / "
                               "DATASETS.CHECK_IMAGES do not apply to it", name)
            continue
        _register(name, dataclasses.replace(reg, skip_invalid=skip, check_images=check))
    classes = {name: _dataset_classes(name, declared) for name in names}
    _check_classes(cfg, {n: c for n, c in classes.items() if c is not None}, train, given_keys)
    return names


def _dataset_classes(name: str, declared: Dict[str, str]) -> Optional[Tuple[List[str], str]]:
    """(class names in category-id order, where they come from) of a dataset the config names."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name not in DatasetCatalog.list():
        raise CarDDDataError(
            f"dataset {name!r} (named in DATASETS.TRAIN / DATASETS.TEST) is not registered: declare it in "
            f"{REGISTER_KEY} as [\"{name}\", \"path/to/annotations.json\", \"path/to/images\"], or use one of "
            f"{sorted(DATASET_NAMES.values())}"
        )
    reg = _REGISTERED.get(name)
    if reg is None:  # registered some other way: trust its metadata when it has class names
        meta_classes = MetadataCatalog.get(name).get("thing_classes", None)
        return (list(meta_classes), f"dataset {name}") if meta_classes else None
    if not os.path.isfile(reg.json_file):
        if reg.cardd_split:
            fix = (f"set DATASETS.ROOT (or --cardd-root, or $CARDD_DATASETS) to the folder that contains "
                   f"{COCO_DIR}/")
        elif name in declared:
            fix = f"fix its entry in {REGISTER_KEY} ({declared[name]!r})"
        else:
            fix = "register it with an existing json file"
        raise CarDDDataError(f"dataset {name}: annotation file not found: {reg.json_file}; {fix}", reg.json_file)
    data = read_coco_json(reg.json_file)
    _raise_if_no_annotations(data, reg.json_file)
    cats = json_categories(data, reg.json_file, reg.class_names)
    return [cats[i] for i in sorted(cats)], reg.json_file


def _check_classes(cfg, classes: Dict[str, Tuple[List[str], str]], train: List[str],
                   given_keys: Optional[Collection[str]]) -> None:
    from cardd_d2.checkpoint.class_names import CLASS_NAMES_KEY, num_classes_key

    if not classes:
        return
    ref = next((n for n in train if n in classes), next(iter(classes)))
    names, source = classes[ref]
    for other, (other_names, other_source) in classes.items():
        if other_names != names:
            raise CarDDDataError(
                f"datasets {ref} and {other} have different classes: {ref} ({source}) has {names}, {other} "
                f"({other_source}) has {other_names}; a model has one list of classes, so DATASETS.TRAIN and "
                "DATASETS.TEST must share it (same names, same category-id order)", other_source
            )
    explicit = list(cfg.MODEL.CLASS_NAMES)
    if explicit and explicit != names:
        raise CarDDDataError(f"{CLASS_NAMES_KEY} is {explicit} but dataset {ref} ({source}) has the classes {names}; "
                             f"set {CLASS_NAMES_KEY} to those names or leave it empty", source)
    key, k = num_classes_key(cfg)
    if k == len(names):
        logger.info("classes of %s (%s): %s", ", ".join(classes), source, ", ".join(names))
        return
    if (given_keys is None or key in given_keys) or cfg.is_frozen():
        raise CarDDDataError(f"{key} is {k} but dataset {ref} ({source}) has {len(names)} classes {names}; set {key} "
                             f"{len(names)}", source)
    node = cfg
    for part in key.split(".")[:-1]:
        node = node[part]
    node[key.split(".")[-1]] = len(names)
    logger.info("%s = %d, the classes of dataset %s (%s): %s", key, len(names), ref, source, ", ".join(names))
