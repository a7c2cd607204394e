"""Image lists (folders, COCO jsons) and the dataset of (image tensor, label) pairs the classifier trains on."""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..images import IMAGE_EXTENSIONS, load_image
from .model import DAMAGED, IMAGENET_MEAN, IMAGENET_STD, UNDAMAGED

logger = logging.getLogger(__name__)

__all__ = ["BinaryDamageDataset", "build_transform", "coco_items", "folder_items"]


def build_transform(input_size: int = 224, train: bool = False, hflip: bool = True):
    """Resize to a square ``input_size`` (aspect ratio not kept), optional horizontal flip, ImageNet normalisation."""
    from torchvision import transforms as T

    ops = [T.Resize((input_size, input_size))]
    if train and hflip:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


def folder_items(root: str) -> List[Tuple[str, int]]:
    """``root/damaged/*`` (label 1) and ``root/undamaged/*`` (label 0); image files only, recursive."""
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

        path, label = self.items[idx]
        img = load_image(path)
        pil = Image.fromarray(np.ascontiguousarray(img.bgr[:, :, ::-1]))
        return self.transform(pil), int(label)
