"""Build the DUTS-style SOD layout from a COCO instance-segmentation dataset (json + image folder).

* Full dataset: each image's mask is the union of all its instance masks (255 on damage, 0 elsewhere).  Images
  without annotations get an empty mask and are kept (``skip_empty=True`` drops them).
* Class-wise variant (paper Table IX): only the instances of one category are activated; by default only images
  that contain the class are kept, ``keep_empty=True`` keeps all images with empty masks where the class is absent
  (which one trains is :mod:`cardd_sod.classwise`'s ``train_set``).
* Edge maps (``CarDD-XX-Edge``, SGL-KRN's contour targets) are the outlines of the same instances' first polygons,
  drawn as the released generator draws them (:mod:`cardd_sod.data.instance_edges`).
* Folders and list files as :mod:`cardd_sod.data.layout` describes them.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Iterable, Optional, Sequence, Union

import cv2
import numpy as np

from ..map_saving import write_map
from .instance_edges import instance_outline_edges
from .layout import SOD_SPLITS, coco_split_files, sod_split_dirs, sod_tag

__all__ = ["coco_to_sod", "coco_to_sod_classwise", "coco_root_to_sod", "cardd_coco_sources", "category_slug",
           "instance_union_mask"]

def category_slug(name: str) -> str:
    """'glass shatter' -> 'glass_shatter'."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()


def _load_coco(json_path: str):
    from pycocotools.coco import COCO
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"COCO json not found: {json_path}")
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(json_path)
        except Exception as e:  # malformed json / missing keys
            raise ValueError(f"cannot read COCO json {json_path}: {e}") from e


def _image_anns(coco, img_info: dict, cat_ids: Optional[Iterable[int]]) -> list:
    """The image's annotations (crowd included), restricted to ``cat_ids`` when given."""
    return coco.loadAnns(coco.getAnnIds(imgIds=[img_info["id"]], catIds=list(cat_ids) if cat_ids is not None else []))


def instance_union_mask(coco, img_info: dict, cat_ids: Optional[Iterable[int]] = None) -> np.ndarray:
    """uint8 {0,255} union of the image's instance masks (restricted to ``cat_ids`` when given)."""
    h, w = int(img_info["height"]), int(img_info["width"])
    mask = np.zeros((h, w), np.uint8)
    for ann in _image_anns(coco, img_info, cat_ids):
        if not ann.get("segmentation"):
            continue
        try:
            m = coco.annToMask(ann)
        except Exception as e:
            raise ValueError(f"annotation {ann.get('id')} of image {img_info.get('file_name')}: "
                             f"bad segmentation ({e})") from e
        if m.shape != (h, w):
            raise ValueError(f"annotation {ann.get('id')}: mask {m.shape} != image size {(h, w)} "
                             f"of {img_info.get('file_name')}")
        mask[m > 0] = 255
    return mask


def _place_image(src: str, dst: str, mode: str) -> None:
    if os.path.lexists(dst):
        os.remove(dst)
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    elif mode == "hardlink":
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    elif mode == "copy":
        shutil.copy2(src, dst)
    else:
        raise ValueError(f"image mode must be copy|symlink|hardlink, got {mode!r}")


def _resolve_cat_ids(coco, category: Union[None, int, str]) -> Optional[list[int]]:
    if category is None:
        return None
    cats = coco.loadCats(coco.getCatIds())
    for c in cats:
        if category == c["id"] or (isinstance(category, str) and category_slug(category) == category_slug(c["name"])):
            return [c["id"]]
    raise KeyError(f"category {category!r} not in the json (have {[c['name'] for c in cats]})")


def coco_to_sod(json_path: str, image_dir: str, out_root: str, split: str = "TR",
                category: Union[None, int, str] = None, keep_empty: Optional[bool] = None,
                write_edges: bool = True, image_mode: str = "copy", check_image_size: bool = True) -> dict:
    """Write one split of the SOD layout under ``out_root`` and return a summary dict.

    ``category``: None for the union of all classes, else a category id or name (class-wise variant).
    ``keep_empty``: keep images whose mask is empty; default True for the full dataset, False for class-wise.
    """
    split = sod_tag(split)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    coco = _load_coco(json_path)
    cat_ids = _resolve_cat_ids(coco, category)
    if keep_empty is None:
        keep_empty = category is None
    d = sod_split_dirs(out_root, split)
    for k in ("image", "mask") + (("edge",) if write_edges else ()):
        os.makedirs(d[k], exist_ok=True)
    rel_img, rel_mask, rel_edge = (os.path.basename(d[k]) for k in ("image", "mask", "edge"))
    pairs, names, edges_lines, seen = [], [], [], {}
    n_empty = 0
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs([img_id])[0]
        fname = info["file_name"]
        src = os.path.join(image_dir, fname)
        if not os.path.isfile(src):
            raise FileNotFoundError(f"image of {json_path} (id {img_id}) not found: {src}")
        stem = os.path.splitext(os.path.basename(fname))[0]
        if stem in seen:
            raise ValueError(f"{json_path}: two images share the stem {stem!r} ({seen[stem]}, {fname})")
        seen[stem] = fname
        mask = instance_union_mask(coco, info, cat_ids)
        if not mask.any():
            if not keep_empty:
                continue
            n_empty += 1
        if check_image_size:
            im = cv2.imread(src, cv2.IMREAD_UNCHANGED)
            if im is None:
                raise ValueError(f"unreadable image: {src}")
            if im.shape[:2] != mask.shape:
                raise ValueError(f"{src}: image is {im.shape[1]}x{im.shape[0]} but the json says "
                                 f"{mask.shape[1]}x{mask.shape[0]}")
        base = os.path.basename(fname)
        _place_image(src, os.path.join(d["image"], base), image_mode)
        write_map(os.path.join(d["mask"], stem + ".png"), mask)
        if write_edges:
            edge = instance_outline_edges(_image_anns(coco, info, cat_ids), *mask.shape)
            write_map(os.path.join(d["edge"], stem + ".png"), edge)
            edges_lines.append(f"{rel_img}/{base} {rel_mask}/{stem}.png {rel_edge}/{stem}.png")
        pairs.append(f"{rel_img}/{base} {rel_mask}/{stem}.png")
        names.append(base)
    if split == "TR":
        with open(d["pair_list"], "w") as f:
            f.write("".join(p + "\n" for p in pairs))
    else:
        with open(d["test_list"], "w") as f:
            f.write("".join(n + "\n" for n in names))
    if write_edges:
        with open(d["edge_list"], "w") as f:
            f.write("".join(e + "\n" for e in edges_lines))
    return {"split": split, "root": out_root, "split_root": d["root"], "num_images": len(pairs),
            "num_empty": n_empty, "category_ids": cat_ids, "names": [os.path.splitext(n)[0] for n in names]}


def coco_to_sod_classwise(json_path: str, image_dir: str, out_root: str, split: str = "TR",
                          categories: Optional[Sequence[Union[int, str]]] = None, keep_empty: bool = False,
                          **kwargs) -> dict:
    """One SOD layout per category: ``out_root/<slug>/CarDD-XX/...``. Returns {slug: summary}."""
    coco = _load_coco(json_path)
    cats = coco.loadCats(coco.getCatIds())
    if categories is not None:
        wanted = [_resolve_cat_ids(coco, c)[0] for c in categories]
        cats = [c for c in cats if c["id"] in wanted]
    out = {}
    for c in sorted(cats, key=lambda c: c["id"]):
        slug = category_slug(c["name"])
        info = coco_to_sod(json_path, image_dir, os.path.join(out_root, slug), split, category=c["id"],
                           keep_empty=keep_empty, **kwargs)
        info["category"] = c["name"]
        out[slug] = info
    return out


def cardd_coco_sources(coco_root: str, splits: Sequence[str] = SOD_SPLITS) -> dict:
    """{SOD tag: (json, image_dir)} of a CarDD_COCO folder; missing files raise naming the path."""
    out = {}
    for sp, (jp, dp) in coco_split_files(coco_root, splits).items():
        if not os.path.isfile(jp):
            raise FileNotFoundError(f"CarDD_COCO annotation file not found: {jp}")
        if not os.path.isdir(dp):
            raise FileNotFoundError(f"CarDD_COCO image folder not found: {dp}")
        out[sod_tag(sp)] = (jp, dp)
    return out


def coco_root_to_sod(coco_root: str, out_root: str, splits: Sequence[str] = SOD_SPLITS, classwise: bool = False,
                     **kwargs) -> dict:
    """Convert every split of a CarDD_COCO folder; ``classwise`` writes ``out_root/<class>/CarDD-XX``."""
    out = {}
    for sp, (jp, dp) in cardd_coco_sources(coco_root, splits).items():
        fn = coco_to_sod_classwise if classwise else coco_to_sod
        out[sp] = fn(jp, dp, out_root, sp, **kwargs)
    return out
