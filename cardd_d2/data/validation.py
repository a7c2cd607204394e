"""Checks of a COCO instances json and its images, before anything is trained on them.

:func:`validate_coco_json` collects every problem (not only the first) into a :class:`ValidationReport`:

========================  ===============================================================================
kind                      meaning
========================  ===============================================================================
bad_image_entry           an ``images`` entry lacks ``id`` / ``file_name`` / ``width`` / ``height``
duplicate_image_id        two ``images`` entries share an id (every entry with that id is invalid)
duplicate_file_name       two ``images`` entries (different ids) name the same file (every such entry is
                          invalid: the file's annotations are split between them)
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

Structural faults raise :class:`CarDDDataError` at once: no such json, not JSON, no ``images`` /
``annotations`` / ``categories`` list, bad or duplicate categories, categories that differ from an expected list.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

__all__ = [
    "CarDDDataError",
    "DataProblem",
    "ValidationReport",
    "PROBLEM_KINDS",
    "read_coco_json",
    "json_categories",
    "validate_coco_json",
]

BBOX_TOLERANCE = 1.0
MAX_LISTED_PROBLEMS = 20

PROBLEM_KINDS = OrderedDict(
    [
        ("bad_image_entry", "image entry without id/file_name/width/height"),
        ("duplicate_image_id", "duplicate image id"),
        ("duplicate_file_name", "the same image file under two or more image ids"),
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

    def add(self, kind: str, detail: str, image_id=None, file_name=None, ann_id=None, *, image_index=None,
            ann_index=None) -> None:
        """Record a problem and mark the image / annotation at that index of the json as invalid."""
        self.problems.append(DataProblem(kind, detail, image_id, file_name, ann_id))
        if image_index is not None:
            self.bad_image_indices.add(image_index)
        if ann_index is not None:
            self.bad_ann_indices.add(ann_index)

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


def read_coco_json(json_file: str) -> dict:
    """The json as a dict, with a :class:`CarDDDataError` naming the file when it is missing or not COCO."""
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


def json_categories(data: dict, json_file: str, class_names: Optional[Sequence[str]] = None) -> Dict[int, str]:
    """{category id: name} in the json's order; with ``class_names`` the names in id order must equal it."""
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


def _check_image_file(path: str):
    """(width, height) after EXIF orientation, or an error string."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot stat: {e}"
    return _check_image_version(path, st.st_mtime_ns, st.st_size)


# A dataset is loaded more than once per run (training, then evaluation); the key changes with the file.
@functools.lru_cache(maxsize=1 << 14)
def _check_image_version(path: str, mtime_ns: int, size: int):
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
        return (w, h)
    except Exception as e:  # PIL raises many types for corrupt files
        return f"{type(e).__name__}: {e}"


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
        CarDDDataError: for structural faults only (see the module docstring). Per-image and per-annotation
            problems go in the report; call ``report.raise_if_invalid()`` to turn them into a CarDDDataError.
    """
    data = read_coco_json(json_file)
    cats = json_categories(data, json_file, class_names)
    report = ValidationReport(json_file=json_file, image_root=image_root, dataset=data)
    images_by_id = _check_images(report, data["images"], image_root, check_images, num_workers)
    _check_annotations(report, data["annotations"], images_by_id, cats)
    return report


def _check_images(report: ValidationReport, images: list, image_root: str, check_images: bool,
                  num_workers: int) -> Dict[object, dict]:
    """Image entries and files; returns {id: entry} of the entries whose id is unique."""
    add = report.add
    id_count = Counter(im.get("id") for im in images if isinstance(im, dict))
    file_ids: Dict[str, set] = {}
    for im in images:  # entries already invalid for their id are not counted twice
        if isinstance(im, dict) and isinstance(im.get("file_name"), str) and id_count[im.get("id")] == 1:
            file_ids.setdefault(os.path.normpath(im["file_name"]), set()).add(im.get("id"))
    images_by_id: Dict[object, dict] = {}
    to_open = []
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            add("bad_image_entry", f"images[{i}] is not an object", image_index=i)
            continue
        iid, name = im.get("id"), im.get("file_name")
        missing = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if missing or not isinstance(name, str) or not _is_int(im.get("width")) or not _is_int(im.get("height")):
            detail = f"missing {missing}" if missing else "file_name must be a string, width/height integers"
            add("bad_image_entry", f"images[{i}]: {detail}", iid, name, image_index=i)
            continue
        if id_count[iid] > 1:
            add("duplicate_image_id", f"image id used by {id_count[iid]} images", iid, name, image_index=i)
            continue
        images_by_id[iid] = im
        same_file = file_ids[os.path.normpath(name)]
        if len(same_file) > 1:
            add("duplicate_file_name", f"the file is listed under image ids {sorted(same_file, key=repr)}",
                iid, name, image_index=i)
            continue
        path = os.path.join(image_root, name)
        if not os.path.isfile(path):
            add("missing_image", f"file not found: {path}", iid, name, image_index=i)
            continue
        if check_images:
            to_open.append((i, im, path))
    if to_open:
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            results = list(pool.map(_check_image_file, [p for _, _, p in to_open]))
        for (i, im, path), res in zip(to_open, results):
            if isinstance(res, str):
                add("unreadable_image", f"{path}: {res}", im["id"], im["file_name"], image_index=i)
            elif tuple(res) != (im["width"], im["height"]):
                add("size_mismatch", f"json says {im['width']}x{im['height']}, file is {res[0]}x{res[1]} (WxH)",
                    im["id"], im["file_name"], image_index=i)
    return images_by_id


def _check_annotations(report: ValidationReport, annotations: list, images_by_id: Dict[object, dict],
                       cats: Dict[int, str]) -> None:
    id_count = Counter(im.get("id") for im in report.dataset["images"] if isinstance(im, dict))
    dup_images = {k for k, v in id_count.items() if v > 1}
    seen_ann_ids = set()
    for i, a in enumerate(annotations):
        if not isinstance(a, dict):
            report.add("bad_annotation_entry", f"annotations[{i}] is not an object", ann_index=i)
            continue
        aid, iid = a.get("id"), a.get("image_id")
        im = images_by_id.get(iid)
        fname = im["file_name"] if im else None
        add = functools.partial(report.add, image_id=iid, file_name=fname, ann_id=aid, ann_index=i)
        missing = [k for k in ("id", "image_id", "category_id", "bbox") if k not in a]
        if missing:
            add("bad_annotation_entry", f"annotations[{i}]: missing {missing}")
            continue
        if aid in seen_ann_ids:
            add("duplicate_annotation_id", "annotation id already used by an earlier annotation")
        seen_ann_ids.add(aid)
        if im is None and iid not in dup_images:
            report.add("missing_image_id", f"image id {iid} is not in 'images'", iid, None, aid, ann_index=i)
        if a["category_id"] not in cats:
            add("unknown_category", f"category_id {a['category_id']!r} is not one of {list(cats)}")
        poly = _polygon_problem(a.get("segmentation"))
        if poly:
            add("bad_polygon", poly)
        bbox = a["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            add("bad_bbox", f"bbox {bbox!r} is not 4 finite numbers")
            continue
        x, y, w, h = bbox
        t = BBOX_TOLERANCE
        if w <= 0 or h <= 0:
            add("bad_bbox", f"bbox {list(bbox)} has non-positive width or height")
        elif im is not None and (x < -t or y < -t or x + w > im["width"] + t or y + h > im["height"] + t):
            add("bad_bbox", f"bbox {list(bbox)} (xywh) is outside the {im['width']}x{im['height']} image")
