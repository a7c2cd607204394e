"""On-disk layouts of the CarDD release and the split names, for cardd_sod and cardd_d2 alike.

CarDD_COCO (instance segmentation)::

    <coco_root>/annotations/instances_{train,val,test}2017.json
    <coco_root>/{train,val,test}2017/000001.jpg ...

CarDD_SOD (DUTS-style salient object detection; one folder per split, tags TR / VAL / TE)::

    <sod_root>/CarDD-TR/CarDD-TR-Image/000001.jpg
    <sod_root>/CarDD-TR/CarDD-TR-Mask/000001.png      255 on damage, 0 elsewhere
    <sod_root>/CarDD-TR/CarDD-TR-Edge/000001.png      edge maps (SGL-KRN)
    <sod_root>/CarDD-TR/train_pair.lst                "CarDD-TR-Image/000001.jpg CarDD-TR-Mask/000001.png"
    <sod_root>/CarDD-TR/train_pair_edge.lst           image mask edge, relative to the split folder
    <sod_root>/CarDD-TE/test.lst                      "000001.jpg" per line

A dataset root holds both: ``<root>/CarDD_COCO`` and ``<root>/CarDD_SOD``.
"""
from __future__ import annotations

import os

__all__ = [
    "SPLITS", "SOD_SPLITS", "DATASET_NAMES", "COCO_DIR", "SOD_DIR", "PAIR_LIST", "TEST_LIST", "EDGE_PAIR_LIST",
    "split_name", "sod_tag", "coco_json", "coco_image_dir", "coco_split_files", "sod_split_dirs",
]

SPLITS = ("train", "val", "test")
_SOD_TAGS = {"train": "TR", "val": "VAL", "test": "TE"}
SOD_SPLITS = tuple(_SOD_TAGS[s] for s in SPLITS)
# detectron2 dataset names of the splits
DATASET_NAMES = {s: f"cardd_{s}" for s in SPLITS}

COCO_DIR = "CarDD_COCO"
SOD_DIR = "CarDD_SOD"
PAIR_LIST = "train_pair.lst"
TEST_LIST = "test.lst"
EDGE_PAIR_LIST = "train_pair_edge.lst"

# every accepted spelling (lower case) -> canonical split
_ALIASES = {}
for _s in SPLITS:
    _t = _SOD_TAGS[_s].lower()
    for _a in (_s, f"{_s}2017", _t, f"cardd-{_t}", DATASET_NAMES[_s]):
        _ALIASES[_a] = _s


def split_name(split: str) -> str:
    """Canonical split ('train' / 'val' / 'test') of any accepted spelling: train, train2017, TR, CarDD-TR,
    cardd_train (case-insensitive)."""
    key = str(split).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown CarDD split {split!r}; expected one of {list(SPLITS)} "
                         f"(or {list(SOD_SPLITS)}, train2017, CarDD-TR, cardd_train, ...)")
    return _ALIASES[key]


def sod_tag(split: str) -> str:
    """SOD folder tag (TR / VAL / TE) of a split."""
    return _SOD_TAGS[split_name(split)]


def coco_json(coco_root: str, split: str) -> str:
    return os.path.join(coco_root, "annotations", f"instances_{split_name(split)}2017.json")


def coco_image_dir(coco_root: str, split: str) -> str:
    return os.path.join(coco_root, f"{split_name(split)}2017")


def coco_split_files(coco_root: str, splits=SPLITS) -> dict:
    """{canonical split: (json file, image folder)} under a CarDD_COCO folder (nothing is checked)."""
    return {split_name(s): (coco_json(coco_root, s), coco_image_dir(coco_root, s)) for s in splits}


def sod_split_dirs(sod_root: str, split: str) -> dict:
    """Paths of one split of the CarDD_SOD layout: split (tag), root, image, mask, edge, pair_list, test_list,
    edge_list."""
    tag = sod_tag(split)
    base = os.path.join(sod_root, f"CarDD-{tag}")
    return {
        "split": tag,
        "root": base,
        "image": os.path.join(base, f"CarDD-{tag}-Image"),
        "mask": os.path.join(base, f"CarDD-{tag}-Mask"),
        "edge": os.path.join(base, f"CarDD-{tag}-Edge"),
        "pair_list": os.path.join(base, PAIR_LIST),
        "test_list": os.path.join(base, TEST_LIST),
        "edge_list": os.path.join(base, EDGE_PAIR_LIST),
    }
