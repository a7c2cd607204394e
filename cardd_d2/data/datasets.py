"""CarDD (and any COCO-style damage dataset) in detectron2's DatasetCatalog, checked before training.

Where the data lives
--------------------
``register_cardd(root)`` expects the official release layout (:mod:`cardd_sod.data.layout`) under ``root``::

    root/CarDD_COCO/annotations/instances_{train,val,test}2017.json
    root/CarDD_COCO/{train,val,test}2017/000001.jpg ...

``root`` defaults to the environment variable ``CARDD_DATASETS`` (the folder that CONTAINS ``CarDD_COCO``,
like detectron2's ``DETECTRON2_DATASETS``), and to ``./datasets`` when that is unset. A ``root`` that is itself the
``CarDD_COCO`` folder is accepted too. Registered names: ``cardd_train``, ``cardd_val``, ``cardd_test``.

Checks
------
Every time a registered dataset is loaded (``DatasetCatalog.get``, i.e. when a data loader is built, before
the first iteration) the json is validated with :func:`cardd_d2.data.validation.validate_coco_json`, which lists
every problem kind it finds. Without ``skip_invalid`` a :class:`CarDDDataError` (a ``ValueError``) lists them: the
json file, then one line per problem naming the image file and id and the annotation id (the first 20, then a
count), then the count per kind. With ``skip_invalid`` the invalid annotations, the invalid images and the
annotations of invalid images are dropped, and one warning gives the counts. Structural faults (no such json, not
JSON, no ``images`` / ``annotations`` / ``categories`` list, categories that differ from the expected class list,
no annotations at all) always raise. Note: with ``skip_invalid`` the evaluator still reads the original json
named in the metadata (``json_file``) as ground truth.

The config switches ``DATASETS.SKIP_INVALID`` / ``DATASETS.CHECK_IMAGES`` apply to every dataset registered here
(``cardd_*`` and :func:`register_coco_damage`) that a config names, through
:func:`cardd_d2.data.datasets_from_cfg.register_datasets_for_cfg`.

The conversion to detectron2 dicts is detectron2's ``load_coco_json`` (polygon ``segmentation`` kept,
category ids mapped to 0..K-1 in json id order).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

from cardd_sod.data.layout import COCO_DIR, DATASET_NAMES, SPLITS, coco_split_files

from .categories import CARDD_CATEGORIES, CARDD_CLASS_NAMES
from .validation import CarDDDataError, ValidationReport, json_categories, read_coco_json, validate_coco_json

__all__ = [
    "load_coco_damage_json",
    "register_coco_damage",
    "register_cardd",
    "cardd_root",
    "cardd_split_files",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- loading
def load_coco_damage_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    skip_invalid: bool = False,
    check_images: bool = True,
    class_names: Optional[Sequence[str]] = None,
) -> List[dict]:
    """Validate, then convert with detectron2's ``load_coco_json`` (see the module docstring).

    With ``skip_invalid`` invalid entries are dropped (one warning with counts); otherwise any problem raises
    :class:`CarDDDataError`. With ``dataset_name`` detectron2 fills that dataset's metadata (thing_classes,
    thing_dataset_id_to_contiguous_id).
    """
    from detectron2.data.datasets import load_coco_json

    report = validate_coco_json(json_file, image_root, check_images=check_images, class_names=class_names)
    _raise_if_no_annotations(report.dataset, json_file)
    if dataset_name is not None:
        _check_metadata_matches(dataset_name, report)
    if report.ok:
        return load_coco_json(json_file, image_root, dataset_name)
    if not skip_invalid:
        raise report.error()
    logger.warning(report.drop_summary())
    cleaned = report.cleaned()
    if not cleaned["annotations"]:
        raise CarDDDataError(f"{json_file}: no valid annotation is left after dropping the invalid entries\n"
                             f"{report.format()}", json_file, report.problems)
    with tempfile.TemporaryDirectory(prefix="cardd_clean_") as tmp:
        clean = os.path.join(tmp, os.path.basename(json_file))
        with open(clean, "w", encoding="utf-8") as f:
            json.dump(cleaned, f)
        return load_coco_json(clean, image_root, dataset_name)


def _raise_if_no_annotations(data: dict, json_file: str) -> None:
    if not data["annotations"]:
        raise CarDDDataError(
            f"{json_file}: the 'annotations' list is empty ({len(data['images'])} images): nothing to train or "
            "evaluate on. Was the right file exported?", json_file
        )


def _check_metadata_matches(dataset_name: str, report: ValidationReport) -> None:
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(dataset_name)
    classes = meta.get("thing_classes", None)
    if classes is None:
        return
    cats = {c["id"]: c["name"] for c in report.dataset["categories"]}
    names = [cats[k] for k in sorted(cats)]
    if list(classes) != names:
        raise CarDDDataError(
            f"{report.json_file}: categories (by id) are {names} but dataset '{dataset_name}' was registered "
            f"with thing_classes {list(classes)}; register it again",
            report.json_file,
        )


# ----------------------------------------------------------------------------------------------- registration
@dataclasses.dataclass(frozen=True)
class _Registration:
    """The arguments a dataset was registered with (compared to make re-registration a no-op, and replaced with
    the config's switches by ``register_datasets_for_cfg``)."""

    json_file: str
    image_root: str
    skip_invalid: bool
    check_images: bool
    class_names: Optional[Tuple[str, ...]] = None  # expected category names in json-id order
    evaluator_type: str = "cardd"
    thing_colors: Optional[Tuple[Tuple[int, ...], ...]] = None
    cardd_split: bool = False  # an official CarDD split: fixed categories, a missing json names CARDD_DATASETS

    def metadata(self) -> dict:
        meta = dict(json_file=self.json_file, image_root=self.image_root, evaluator_type=self.evaluator_type)
        if self.cardd_split:
            meta["thing_dataset_id_to_contiguous_id"] = {c["id"]: i for i, c in enumerate(CARDD_CATEGORIES)}
        if self.class_names is not None:
            meta["thing_classes"] = list(self.class_names)
        if not self.cardd_split and os.path.isfile(self.json_file):  # CarDD's splits are read when loaded
            data = read_coco_json(self.json_file)
            _raise_if_no_annotations(data, self.json_file)
            if self.class_names is None:
                cats = json_categories(data, self.json_file)
                ids = sorted(cats)
                meta["thing_classes"] = [cats[i] for i in ids]
                meta["thing_dataset_id_to_contiguous_id"] = {i: k for k, i in enumerate(ids)}
        if self.thing_colors is not None:
            meta["thing_colors"] = [list(c) for c in self.thing_colors]
        return meta


# name -> how it was registered here (one entry per registered name)
_REGISTERED: Dict[str, _Registration] = {}


def _load_registered(name: str, reg: _Registration) -> List[dict]:
    if reg.cardd_split and not os.path.isfile(reg.json_file):
        raise CarDDDataError(
            f"{name}: annotation file not found: {reg.json_file}. Set CARDD_DATASETS (or DATASETS.ROOT / "
            f"--cardd-root) to the folder that contains {COCO_DIR}/", reg.json_file
        )
    return load_coco_damage_json(reg.json_file, reg.image_root, name, reg.skip_invalid, reg.check_images,
                                 reg.class_names)


def _register(name: str, reg: _Registration) -> bool:
    """Register ``name`` unless it is registered with the same arguments already; True when (re)registered."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        if _REGISTERED.get(name) == reg and MetadataCatalog.get(name).get("json_file", None) == reg.json_file:
            return False
    meta = reg.metadata()  # may raise (an empty annotation list): before touching the catalogs
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, partial(_load_registered, name, reg))
    MetadataCatalog.get(name).set(**meta)
    _REGISTERED[name] = reg
    return True


def register_coco_damage(
    name: str,
    json_file: str,
    image_root: str,
    skip_invalid: bool = False,
    class_names: Optional[Sequence[str]] = None,
    check_images: bool = True,
    evaluator_type: str = "cardd",
    thing_colors: Optional[Sequence[Sequence[int]]] = None,
) -> str:
    """Register any COCO instances json (any category ids) as ``name``, validated when loaded.

    ``class_names``: the expected category names in json-id order (a mismatch raises CarDDDataError at load);
    without it they are read from the json (at registration when the file exists, else when loading).
    A json that exists but has an empty ``annotations`` list raises CarDDDataError here.
    Registering the same name with the same arguments again is a no-op; different arguments replace it.
    Returns ``name``.
    """
    reg = _Registration(
        json_file=os.path.abspath(json_file),
        image_root=os.path.abspath(image_root),
        skip_invalid=bool(skip_invalid),
        check_images=bool(check_images),
        class_names=tuple(class_names) if class_names is not None else None,
        evaluator_type=evaluator_type,
        thing_colors=None if thing_colors is None else tuple(tuple(c) for c in thing_colors),
    )
    _register(name, reg)
    return name


def cardd_root(root: Optional[str] = None) -> str:
    """The folder holding ``CarDD_COCO``: ``root``, else ``$CARDD_DATASETS``, else ``datasets``."""
    root = root or os.environ.get("CARDD_DATASETS") or "datasets"
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(os.path.join(root, COCO_DIR)) and os.path.isdir(os.path.join(root, "annotations")):
        return os.path.dirname(root)  # given the CarDD_COCO folder itself
    return root


def cardd_split_files(root: Optional[str] = None) -> Dict[str, tuple]:
    """{split: (json_file, image_root)} of the official layout under :func:`cardd_root`."""
    return coco_split_files(os.path.join(cardd_root(root), COCO_DIR))


def register_cardd(
    root: Optional[str] = None,
    skip_invalid: bool = False,
    check_images: bool = True,
    splits: Sequence[str] = SPLITS,
) -> List[str]:
    """Register ``cardd_train`` / ``cardd_val`` / ``cardd_test`` from ``root/CarDD_COCO`` (see module docstring).

    Nothing is read until a split is loaded; a missing folder then raises CarDDDataError naming the path.
    Metadata: thing_classes (official order), thing_dataset_id_to_contiguous_id {1..6 -> 0..5}, thing_colors,
    json_file, image_root, evaluator_type "cardd". Idempotent for the same arguments. Returns the names.
    """
    files = cardd_split_files(root)
    names = []
    for split in splits:
        if split not in files:
            raise ValueError(f"unknown CarDD split {split!r}; expected one of {list(files)}")
        json_file, image_root = files[split]
        reg = _Registration(
            json_file=json_file,
            image_root=image_root,
            skip_invalid=bool(skip_invalid),
            check_images=bool(check_images),
            class_names=tuple(CARDD_CLASS_NAMES),
            thing_colors=tuple(tuple(c["color"]) for c in CARDD_CATEGORIES),
            cardd_split=True,
        )
        _register(DATASET_NAMES[split], reg)
        names.append(DATASET_NAMES[split])
    return names
