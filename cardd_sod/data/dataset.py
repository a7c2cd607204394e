"""CarDD salient-object-detection data: DUTS-style layout, reading/validation, per-model preprocessing.

The layout (CarDD-TR / CarDD-VAL / CarDD-TE with -Image / -Mask / -Edge folders) is :mod:`cardd_sod.data.layout`.

List files: every non-empty line holds 1, 2 or 3 whitespace-separated paths (image [mask [edge]]).  Paths are
resolved against the split folder first, then against the split's Image / Mask / Edge folder.  A one-column line
takes the mask ``<Mask dir>/<image stem>.png``.  Without a list file the split's Image folder is listed (sorted).
``train_pair.lst`` is preferred over ``test.lst`` when both exist (the pair list names the masks).

Mask policy (documented decision; the paper's evaluation binarises GT with > 128): a mask must be a readable
single-channel (or grey RGB) image of exactly the image's size.  Masks with values other than 0 / 255 (resampling or
JPEG artefacts) are binarised with ``> 128`` with a warning naming the file, or rejected when ``strict_masks=True``.
A 0/1 mask (max value 1) is read as foreground = 1, with a warning.

Preprocessing is a model spec's :class:`~cardd_sod.data.preprocess.PreprocessSpec` (``get_sod_spec(name)
.preprocess``).  Random augmentation draws from a generator seeded with ``(seed, epoch, index)`` so data order and
augmentation are identical across resumes and worker counts.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..fileio import IMAGE_EXTENSIONS

from .edges import mask_to_edge
from .layout import sod_split_dirs
from .preprocess import PreprocessSpec, preprocess_sample

__all__ = ["SODSample", "read_sod_split", "load_image", "load_mask", "CarDDSODDataset", "sod_collate"]



@dataclasses.dataclass
class SODSample:
    name: str                    # file stem, used to match predictions and GT
    image: str
    mask: Optional[str]
    edge: Optional[str] = None


def _resolve(entry: str, candidates: Sequence[str], list_file: str, lineno: int, what: str) -> str:
    for c in candidates:
        p = os.path.normpath(os.path.join(c, entry))
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(
        f"{list_file}:{lineno}: {what} {entry!r} not found (looked in {', '.join(candidates)})")


def read_sod_split(root: str, split: str, require_masks: bool = True) -> list[SODSample]:
    """Samples of one split (see module docstring for list-file rules). Missing files raise with the name."""
    d = sod_split_dirs(root, split)
    if not os.path.isdir(d["root"]):
        raise FileNotFoundError(f"SOD split folder not found: {d['root']} (expected DUTS-style CarDD_SOD layout)")
    list_file = next((p for p in (d["pair_list"], d["test_list"]) if os.path.isfile(p)), None)
    samples: list[SODSample] = []
    if list_file is None:
        if not os.path.isdir(d["image"]):
            raise FileNotFoundError(f"neither a list file nor an image folder in {d['root']}")
        entries = [[f] for f in sorted(os.listdir(d["image"])) if f.lower().endswith(IMAGE_EXTENSIONS)]
        list_file = d["image"]
    else:
        with open(list_file) as f:
            entries = [ln.split() for ln in f.read().splitlines()]
    for lineno, cols in enumerate(entries, 1):
        if not cols:
            continue
        if len(cols) > 3:
            raise ValueError(f"{list_file}:{lineno}: expected 1-3 paths per line, got {len(cols)}")
        img = _resolve(cols[0], [d["root"], d["image"]], list_file, lineno, "image")
        stem = os.path.splitext(os.path.basename(img))[0]
        if len(cols) >= 2:
            mask = _resolve(cols[1], [d["root"], d["mask"]], list_file, lineno, "mask")
        else:
            mask = os.path.join(d["mask"], stem + ".png")
            if not os.path.isfile(mask):
                if require_masks:
                    raise FileNotFoundError(f"{list_file}:{lineno}: mask for image {img} not found: {mask}")
                mask = None
        edge = None
        if len(cols) == 3:
            edge = _resolve(cols[2], [d["root"], d["edge"]], list_file, lineno, "edge map")
        else:
            cand = os.path.join(d["edge"], stem + ".png")
            edge = cand if os.path.isfile(cand) else None
        samples.append(SODSample(stem, img, mask, edge))
    if not samples:
        raise ValueError(f"{list_file}: no samples")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{list_file}: duplicate image stems {dup[:5]}")
    return samples


def load_image(path: str) -> np.ndarray:
    """RGB uint8 HxWx3. Raises naming the file when it is missing or unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"unreadable image (not a decodable image file): {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_mask(path: str, strict: bool = False, expected_hw: Optional[tuple] = None) -> np.ndarray:
    """Binary uint8 mask in {0, 255} (see the mask policy in the module docstring)."""
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"mask not found: {path}")
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"unreadable mask (not a decodable image file): {path}")
    if raw.ndim == 3:
        if raw.shape[2] == 4:
            raw = raw[:, :, :3]
        if not (np.array_equal(raw[:, :, 0], raw[:, :, 1]) and np.array_equal(raw[:, :, 0], raw[:, :, 2])):
            raise ValueError(f"mask is a colour image (channels differ), expected a grey-level mask: {path}")
        raw = raw[:, :, 0]
    if raw.dtype != np.uint8:
        if raw.dtype == np.uint16 and raw.max() <= 255:
            raw = raw.astype(np.uint8)
        else:
            raise ValueError(f"mask must be 8-bit, got {raw.dtype}: {path}")
    if expected_hw is not None and tuple(raw.shape[:2]) != tuple(expected_hw):
        raise ValueError(f"mask size {raw.shape[1]}x{raw.shape[0]} (WxH) differs from its image's "
                         f"{expected_hw[1]}x{expected_hw[0]}: {path}")
    values = np.unique(raw)
    if np.all(np.isin(values, (0, 255))):
        return raw
    if np.all(np.isin(values, (0, 1))):
        warnings.warn(f"mask uses 0/1 values, reading 1 as foreground: {path}")
        return (raw > 0).astype(np.uint8) * 255
    if strict:
        raise ValueError(f"mask is not binary (values {values[:8].tolist()}...; expected 0/255): {path}")
    warnings.warn(f"mask is not binary ({len(values)} distinct values); binarising with > 128: {path}")
    return (raw > 128).astype(np.uint8) * 255


class CarDDSODDataset(Dataset):
    """DUTS-style CarDD SOD split as tensors for one model family.

    Item: ``{"image": float[3,H,W], "mask": float[1,H,W] in [0,1], "edge": float[1,H,W] (when the preset asks),
    "name": stem, "orig_size": (H0, W0), "index": i}``.
    """

    def __init__(self, root: str, split: str, preprocess: PreprocessSpec, train: bool = False,
                 seed: int = 0, strict_masks: bool = False, max_images: int = 0, require_masks: bool = True):
        self.root, self.split, self.train, self.seed = root, split, train, int(seed)
        if not isinstance(preprocess, PreprocessSpec):
            raise TypeError(f"preprocess must be a PreprocessSpec (a model spec's .preprocess), got {preprocess!r}")
        self.pp = preprocess
        self.strict_masks = strict_masks
        self.samples = read_sod_split(root, split, require_masks=require_masks)
        if max_images and max_images > 0:
            self.samples = self.samples[: int(max_images)]
        missing = [s.name for s in self.samples if not s.edge] if self.pp.edges and train else []
        if missing:
            warnings.warn(f"{len(missing)} of {len(self.samples)} training images have no edge map in "
                          f"{sod_split_dirs(root, split)['edge']} (e.g. {missing[0]}): their contour targets are "
                          "derived from the masks, not the instance outlines the released SGL-KRN trained on "
                          "(tools/coco_to_sod.py writes those)")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, 1 if self.train else 0])

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        img = load_image(s.image)
        h0, w0 = img.shape[:2]
        mask = load_mask(s.mask, self.strict_masks, (h0, w0)) if s.mask else np.zeros((h0, w0), np.uint8)
        edge = None
        if self.pp.edges:
            if s.edge:
                edge = load_mask(s.edge, False, (h0, w0))
            else:
                edge = (mask_to_edge(mask) * 255).astype(np.uint8)
        return self._transform(img, mask, edge, s, index, (h0, w0))

    def _transform(self, img, mask, edge, s, index, orig_hw):
        image, mask, edge = preprocess_sample(self.pp, img, mask, edge, self._rng(index), self.train)
        out = {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask), "name": s.name,
               "orig_size": tuple(int(v) for v in orig_hw), "index": int(index)}
        if edge is not None:
            out["edge"] = torch.from_numpy(edge)
        return out


def sod_collate(batch: list[dict]) -> dict:
    """Stack tensors; full-resolution presets need batch size 1 (or equal image sizes)."""
    out: dict = {}
    for key in batch[0]:
        vals = [b[key] for b in batch]
        if isinstance(vals[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in vals}
            if len(shapes) > 1:
                names = [b["name"] for b in batch]
                raise ValueError(f"cannot batch images of different sizes {sorted(shapes)} ({names}); "
                                 "use batch size 1 or a preset with a fixed SIZE")
            out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out
