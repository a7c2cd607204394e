"""CarDD (and any COCO-style damage dataset) in detectron2's DatasetCatalog, checked before training.

Where the data lives
--------------------
``register_cardd(root)`` expects the official release layout under ``root``::

    root/CarDD_COCO/annotations/instances_{train,val,test}2017.json
    root/CarDD_COCO/{train,val,test}2017/000001.jpg ...

``root`` defaults to the environment variable ``CARDD_DATASETS`` (the folder that CONTAINS ``CarDD_COCO``,
like detectron2's ``DETECTRON2_DATASETS``), and to ``./datasets`` when that is unset. A ``root`` that is itself the
``CarDD_COCO`` folder is accepted too. Registered names: ``cardd_train``, ``cardd_val``, ``cardd_test``.

Checks
------
Every time a registered dataset is loaded (``DatasetCatalog.get``, i.e. when a data loader is built, before
the first iteration) the json is validated with :func:`validate_coco_json`. Problems found (all of them, not
only the first):

========================  ===============================================================================
kind                      meaning
========================  ===============================================================================
bad_image_entry           an ``images`` entry lacks ``id`` / ``file_name`` / ``width`` / ``height``
duplicate_image_id        two ``images`` entries share an id (every entry with that id is invalid)
missing_image             the image file does not exist under ``image_root``
unreadable_image          PIL cannot open, verify or decode the file (only with ``check_images``)
size_mismatch             width/height in the json differ from the file's (after EXIF rotation;
                          only with ``check_images``)
bad_annotation_entry      an annotation lacks ``id`` / ``image_id`` / ``category_id`` / ``bbox``
duplicate_annotation_id   an annotation id already used by an earlier annotation (the later ones are invalid)
missing_image_id          ``image_id`` names no image in the json
unknown_category          ``category_id`` is not among the json's categories
bad_polygon               no segmentation, or a polygon with < 3 points, an odd number of coordinates,
                          non-finite values or zero area (an RLE dict is accepted)
bad_bbox                  not 4 finite numbers, width or height <= 0, or outside the image by more than 1 px
========================  ===============================================================================

Without ``skip_invalid`` a :class:`CarDDDataError` (a ``ValueError``) lists them: the json file, then one
line per problem naming the image file and id and the annotation id (the first 20, then a count), then the
count per kind. With ``skip_invalid`` the invalid annotations, the invalid images and the annotations of
invalid images are dropped, and one warning gives the counts. Structural faults that cannot be skipped (no
such json, not JSON, no ``images`` / ``annotations`` / ``categories`` list, categories that differ from the
expected class list) always raise. Note: with ``skip_invalid`` the evaluator still reads the original json
named in the metadata (``json_file``) as ground truth.

The conversion to detectron2 dicts is detectron2's ``load_coco_json`` (polygon ``segmentation`` kept,
category ids mapped to 0..K-1 in json id order).
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional, Sequence

from .categories import CARDD_CATEGORIES, CARDD_CLASS_NAMES

__all__ = [
    "CarDDDataError",
    "DataProblem",
    "ValidationReport",
    "validate_coco_json",
    "load_coco_damage_json",
    "register_coco_damage",
    "register_cardd",
    "register_cardd_from_cfg",
    "cardd_root",
    "cardd_split_files",
    "CARDD_SPLIT_NAMES",
    "PROBLEM_KINDS",
]

logger = logging.getLogger(__name__)

CARDD_SPLIT_NAMES = {"train": "cardd_train", "val": "cardd_val", "test": "cardd_test"}
BBOX_TOLERANCE = 1.0
MAX_LISTED_PROBLEMS = 20

PROBLEM_KINDS = OrderedDict(
    [
        ("bad_image_entry", "image entry without id/file_name/width/height"),
        ("duplicate_image_id", "duplicate image id"),
        ("missing_image", "image file not found"),
        ("unreadable_image", "unreadable or corrupt image file"),
        ("size_mismatch", "image size in the json differs from the file"),
        ("bad_annotation_entry", "annotation without id/image_id/category_id/bbox"),
        ("duplicate_annotation_id", "duplicate annotation id"),
        ("missing_image_id", "annotation on an image id that is not in the json"),
        ("unknown_category", "unknown category id"),
        ("bad_polygon", "invalid polygon (< 3 points, odd length, non-finite or zero area)"),
        ("bad_bbox", "bbox with non-positive size or outside the image"),
    ]
)


class CarDDDataError(ValueError):
    """Invalid dataset files; ``problems`` holds every :class:`DataProblem` found (may be empty for a structural
    fault), ``json_file`` the annotation file."""

    def __init__(self, message: str, json_file: Optional[str] = None, problems: Sequence["DataProblem"] = ()):
        super().__init__(message)
        self.json_file = json_file
        self.problems = list(problems)


@dataclass
class DataProblem:
    kind: str
    detail: str
    image_id: Optional[object] = None
    file_name: Optional[str] = None
    ann_id: Optional[object] = None

    def __str__(self) -> str:
        where = []
        if self.file_name is not None or self.image_id is not None:
            where.append(f"image {self.file_name!r} (id {self.image_id})")
        if self.ann_id is not None:
            where.append(f"annotation id {self.ann_id}")
        return f"[{self.kind}] {', '.join(where) or 'dataset'}: {self.detail}"


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_coco_json`.

    ``bad_image_indices`` / ``bad_ann_indices`` index the json's ``images`` / ``annotations`` lists.
    """

    json_file: str
    image_root: str
    dataset: dict
    problems: List[DataProblem] = field(default_factory=list)
    bad_image_indices: set = field(default_factory=set)
    bad_ann_indices: set = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def num_images(self) -> int:
        return len(self.dataset.get("images", []))

    @property
    def num_annotations(self) -> int:
        return len(self.dataset.get("annotations", []))

    def counts(self) -> Dict[str, int]:
        c = Counter(p.kind for p in self.problems)
        return OrderedDict((k, c[k]) for k in PROBLEM_KINDS if c[k])

    def format(self, max_items: int = MAX_LISTED_PROBLEMS) -> str:
        lines = [
            f"{len(self.problems)} problem(s) in {self.json_file} (image root {self.image_root}; "
            f"{self.num_images} images, {self.num_annotations} annotations):"
        ]
        lines += [f"  {p}" for p in self.problems[:max_items]]
        if len(self.problems) > max_items:
            lines.append(f"  ... and {len(self.problems) - max_items} more")
        lines.append("counts: " + ", ".join(f"{k}={v}" for k, v in self.counts().items()))
        return "\n".join(lines)

    def error(self) -> CarDDDataError:
        msg = (
            f"invalid dataset {self.json_file}\n{self.format()}\n"
            "Fix the files, or drop the invalid entries with skip_invalid=True "
            "(config: DATASETS.SKIP_INVALID True)."
        )
        return CarDDDataError(msg, self.json_file, self.problems)

    def raise_if_invalid(self) -> None:
        if self.problems:
            raise self.error()

    def cleaned(self) -> dict:
        """A copy of the dataset without invalid images, invalid annotations and annotations of dropped images."""
        ds = self.dataset
        images = [im for i, im in enumerate(ds["images"]) if i not in self.bad_image_indices]
        kept_ids = {im["id"] for im in images}
        anns = [
            a
            for i, a in enumerate(ds["annotations"])
            if i not in self.bad_ann_indices and a.get("image_id") in kept_ids
        ]
        out = {k: v for k, v in ds.items() if k not in ("images", "annotations")}
        out["images"] = images
        out["annotations"] = anns
        return out

    def drop_summary(self) -> str:
        cleaned = self.cleaned()
        n_img = self.num_images - len(cleaned["images"])
        n_ann = self.num_annotations - len(cleaned["annotations"])
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return (
            f"{self.json_file}: dropped {n_img} of {self.num_images} images and {n_ann} of "
            f"{self.num_annotations} annotations (skip_invalid); problems: {counts}"
        )


# ----------------------------------------------------------------------------------------------- validation
def _read_json(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise CarDDDataError(f"annotation file not found: {json_file}", json_file)
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CarDDDataError(f"{json_file} is not valid JSON: {e}", json_file) from e
    if not isinstance(data, dict):
        raise CarDDDataError(f"{json_file}: expected a COCO json object, got {type(data).__name__}", json_file)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CarDDDataError(f"{json_file}: no '{key}' list (not a COCO instances file?)", json_file)
    return data


def _categories(data: dict, json_file: str, class_names: Optional[Sequence[str]]) -> Dict[int, str]:
    cats = OrderedDict()
    for c in data["categories"]:
        if not isinstance(c, dict) or not _is_int(c.get("id")) or "name" not in c:
            raise CarDDDataError(f"{json_file}: category entry without integer 'id' and 'name': {c!r}", json_file)
        if c["id"] in cats:
            raise CarDDDataError(f"{json_file}: duplicate category id {c['id']}", json_file)
        cats[c["id"]] = c["name"]
    if class_names is not None:
        names = [cats[k] for k in sorted(cats)]
        if names != list(class_names):
            raise CarDDDataError(
                f"{json_file}: categories (by id) are {names}, expected {list(class_names)}", json_file
            )
    return cats


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_IMAGE_CHECK_CACHE: Dict[tuple, tuple] = {}


def _check_image_file(path: str):
    """(width, height) after EXIF orientation, or an error string. Cached on (path, mtime, size)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot stat: {e}"
    key = (path, st.st_mtime_ns, st.st_size)
    if key in _IMAGE_CHECK_CACHE:
        return _IMAGE_CHECK_CACHE[key]
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # broken EXIF does not make the pixels unusable
                orientation = 1
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        result = (w, h)
    except Exception as e:  # PIL raises many types for corrupt files
        result = f"{type(e).__name__}: {e}"
    _IMAGE_CHECK_CACHE[key] = result
    return result


def _polygon_problem(seg) -> Optional[str]:
    if isinstance(seg, dict):
        if "counts" in seg and "size" in seg:
            return None
        return "segmentation dict is not an RLE (needs 'counts' and 'size')"
    if not isinstance(seg, list) or not seg:
        return "no segmentation polygon"
    for k, poly in enumerate(seg):
        if not isinstance(poly, list):
            return f"polygon {k} is not a list of coordinates"
        if len(poly) % 2:
            return f"polygon {k} has an odd number of coordinates ({len(poly)})"
        if len(poly) < 6:
            return f"polygon {k} has {len(poly) // 2} point(s), needs >= 3"
        if not all(_is_num(v) for v in poly):
            return f"polygon {k} has non-numeric or non-finite coordinates"
        xs, ys = poly[0::2], poly[1::2]
        n = len(xs)
        twice = sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))
        if abs(twice) < 1e-9:
            return f"polygon {k} has zero area"
    return None


def validate_coco_json(
    json_file: str,
    image_root: str,
    check_images: bool = True,
    class_names: Optional[Sequence[str]] = None,
    num_workers: int = 4,
) -> ValidationReport:
    """Check a COCO instances json and its images; returns a :class:`ValidationReport` listing every problem.

    Args:
        json_file: the annotation file.
        image_root: folder the images' ``file_name`` are relative to.
        check_images: also open every image with PIL (verify + decode) and compare its size with the json.
            Without it only the files' existence is checked.
        class_names: when given, the json's category names in id order must equal it (else CarDDDataError).
        num_workers: threads used to open images.

    Raises:
        CarDDDataError: for structural faults only (missing / non-JSON file, no images / annotations /
            categories list, bad categories). Per-image and per-annotation problems go in the report;
            call ``report.raise_if_invalid()`` to turn them into a CarDDDataError.
    """
    data = _read_json(json_file)
    cats = _categories(data, json_file, class_names)
    report = ValidationReport(json_file=json_file, image_root=image_root, dataset=data)
    add = report.problems.append

    # images
    id_count = Counter(im.get("id") for im in data["images"] if isinstance(im, dict))
    images_by_id: Dict[object, dict] = {}
    to_open = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            add(DataProblem("bad_image_entry", f"images[{i}] is not an object"))
            report.bad_image_indices.add(i)
            continue
        iid, name = im.get("id"), im.get("file_name")
        missing = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if missing or not isinstance(name, str) or not _is_int(im.get("width")) or not _is_int(im.get("height")):
            detail = f"missing {missing}" if missing else "file_name must be a string, width/height integers"
            add(DataProblem("bad_image_entry", f"images[{i}]: {detail}", iid, name))
            report.bad_image_indices.add(i)
            continue
        if id_count[iid] > 1:
            add(DataProblem("duplicate_image_id", f"image id used by {id_count[iid]} images", iid, name))
            report.bad_image_indices.add(i)
            continue
        images_by_id[iid] = im
        path = os.path.join(image_root, name)
        if not os.path.isfile(path):
            add(DataProblem("missing_image", f"file not found: {path}", iid, name))
            report.bad_image_indices.add(i)
            continue
        if check_images:
            to_open.append((i, im, path))
    if to_open:
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            results = list(pool.map(_check_image_file, [p for _, _, p in to_open]))
        for (i, im, path), res in zip(to_open, results):
            if isinstance(res, str):
                add(DataProblem("unreadable_image", f"{path}: {res}", im["id"], im["file_name"]))
                report.bad_image_indices.add(i)
            elif tuple(res) != (im["width"], im["height"]):
                add(
                    DataProblem(
                        "size_mismatch",
                        f"json says {im['width']}x{im['height']}, file is {res[0]}x{res[1]} (WxH)",
                        im["id"],
                        im["file_name"],
                    )
                )
                report.bad_image_indices.add(i)
    dup_images = {k for k, v in id_count.items() if v > 1}

    # annotations
    seen_ann_ids = set()
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            add(DataProblem("bad_annotation_entry", f"annotations[{i}] is not an object"))
            report.bad_ann_indices.add(i)
            continue
        aid, iid = a.get("id"), a.get("image_id")
        im = images_by_id.get(iid)
        fname = im["file_name"] if im else None
        missing = [k for k in ("id", "image_id", "category_id", "bbox") if k not in a]
        if missing:
            add(DataProblem("bad_annotation_entry", f"annotations[{i}]: missing {missing}", iid, fname, aid))
            report.bad_ann_indices.add(i)
            continue
        if aid in seen_ann_ids:
            add(DataProblem("duplicate_annotation_id", "annotation id already used by an earlier annotation",
                            iid, fname, aid))
            report.bad_ann_indices.add(i)
        seen_ann_ids.add(aid)
        if im is None and iid not in dup_images:
            add(DataProblem("missing_image_id", f"image id {iid} is not in 'images'", iid, None, aid))
            report.bad_ann_indices.add(i)
        if a["category_id"] not in cats:
            add(DataProblem("unknown_category", f"category_id {a['category_id']!r} is not one of {list(cats)}",
                            iid, fname, aid))
            report.bad_ann_indices.add(i)
        poly = _polygon_problem(a.get("segmentation"))
        if poly:
            add(DataProblem("bad_polygon", poly, iid, fname, aid))
            report.bad_ann_indices.add(i)
        bbox = a["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            add(DataProblem("bad_bbox", f"bbox {bbox!r} is not 4 finite numbers", iid, fname, aid))
            report.bad_ann_indices.add(i)
        else:
            x, y, w, h = bbox
            t = BBOX_TOLERANCE
            if w <= 0 or h <= 0:
                add(DataProblem("bad_bbox", f"bbox {list(bbox)} has non-positive width or height", iid, fname, aid))
                report.bad_ann_indices.add(i)
            elif im is not None and (x < -t or y < -t or x + w > im["width"] + t or y + h > im["height"] + t):
                add(
                    DataProblem(
                        "bad_bbox",
                        f"bbox {list(bbox)} (xywh) is outside the {im['width']}x{im['height']} image",
                        iid,
                        fname,
                        aid,
                    )
                )
                report.bad_ann_indices.add(i)
    return report


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
    if dataset_name is not None:
        _check_metadata_matches(dataset_name, report)
    if report.ok:
        return load_coco_json(json_file, image_root, dataset_name)
    if not skip_invalid:
        raise report.error()
    logger.warning(report.drop_summary())
    with tempfile.TemporaryDirectory(prefix="cardd_clean_") as tmp:
        clean = os.path.join(tmp, os.path.basename(json_file))
        with open(clean, "w", encoding="utf-8") as f:
            json.dump(report.cleaned(), f)
        return load_coco_json(clean, image_root, dataset_name)


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
_REGISTRATIONS: Dict[str, tuple] = {}


def _register(name: str, key: tuple, loader, metadata: dict) -> bool:
    """Register ``loader`` under ``name`` unless the same ``key`` is registered already; True when (re)registered."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if _REGISTRATIONS.get(name) == key and meta.get("json_file", None) == metadata["json_file"]:
            return False
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
    _REGISTRATIONS[name] = key
    return True


def _json_categories_if_present(json_file: str):
    """(thing_classes, id map) read from the json when it exists and is readable, else None."""
    try:
        data = _read_json(json_file)
        cats = _categories(data, json_file, None)
    except CarDDDataError:
        return None
    ids = sorted(cats)
    return [cats[i] for i in ids], {i: k for k, i in enumerate(ids)}


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
    Registering the same name with the same arguments again is a no-op; different arguments replace it.
    Returns ``name``.
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    cn = tuple(class_names) if class_names is not None else None
    key = ("coco_damage", json_file, image_root, bool(skip_invalid), bool(check_images), cn, evaluator_type,
           None if thing_colors is None else tuple(map(tuple, thing_colors)))
    meta = dict(json_file=json_file, image_root=image_root, evaluator_type=evaluator_type)
    if cn is not None:
        meta["thing_classes"] = list(cn)
    else:
        found = _json_categories_if_present(json_file)
        if found is not None:
            meta["thing_classes"], meta["thing_dataset_id_to_contiguous_id"] = found
    if thing_colors is not None:
        meta["thing_colors"] = [list(c) for c in thing_colors]
    loader = partial(load_coco_damage_json, json_file, image_root, name, bool(skip_invalid), bool(check_images), cn)
    _register(name, key, loader, meta)
    return name


def cardd_root(root: Optional[str] = None) -> str:
    """The folder holding ``CarDD_COCO``: ``root``, else ``$CARDD_DATASETS``, else ``datasets``."""
    root = root or os.environ.get("CARDD_DATASETS") or "datasets"
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(os.path.join(root, "CarDD_COCO")) and os.path.isdir(os.path.join(root, "annotations")):
        return os.path.dirname(root)  # given the CarDD_COCO folder itself
    return root


def cardd_split_files(root: Optional[str] = None) -> Dict[str, tuple]:
    """{split: (json_file, image_root)} of the official layout under :func:`cardd_root`."""
    coco = os.path.join(cardd_root(root), "CarDD_COCO")
    return {
        s: (os.path.join(coco, "annotations", f"instances_{s}2017.json"), os.path.join(coco, f"{s}2017"))
        for s in ("train", "val", "test")
    }


def register_cardd(
    root: Optional[str] = None,
    skip_invalid: bool = False,
    check_images: bool = True,
    splits: Sequence[str] = ("train", "val", "test"),
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
        name = CARDD_SPLIT_NAMES[split]
        key = ("cardd", json_file, image_root, bool(skip_invalid), bool(check_images))
        meta = dict(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="cardd",
            thing_classes=list(CARDD_CLASS_NAMES),
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(CARDD_CATEGORIES)},
            thing_colors=[list(c["color"]) for c in CARDD_CATEGORIES],
        )
        loader = partial(_load_cardd_split, json_file, image_root, name, bool(skip_invalid), bool(check_images))
        _register(name, key, loader, meta)
        names.append(name)
    return names


def _load_cardd_split(json_file, image_root, name, skip_invalid, check_images):
    if not os.path.isfile(json_file):
        raise CarDDDataError(
            f"{name}: annotation file not found: {json_file}. Set CARDD_DATASETS (or pass root / --cardd-root) to "
            "the folder that contains CarDD_COCO/", json_file
        )
    return load_coco_damage_json(json_file, image_root, name, skip_invalid, check_images, tuple(CARDD_CLASS_NAMES))


def register_cardd_from_cfg(cfg, root: Optional[str] = None) -> List[str]:
    """:func:`register_cardd` with ``DATASETS.SKIP_INVALID`` / ``CHECK_IMAGES`` (and ``ROOT`` when set)."""
    c = cfg.DATASETS
    return register_cardd(root or c.ROOT or None, skip_invalid=c.SKIP_INVALID, check_images=c.CHECK_IMAGES)
