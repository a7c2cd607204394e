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

Preprocessing presets follow the authors' released training code (see /work/shared/spec/sod.md):
``csnet`` (224x224, RGB/255, ImageNet mean/std, random crop 0-14 px per side then back to 224, random lr-or-ud flip,
soft bilinear GT), ``poolnet`` / ``sgl_krn`` (full resolution, BGR minus caffe means, horizontal flip, GT/255; SGL-KRN
also returns edge maps and, as its release does per the model package's SPEC, rotates by U(-25, 25) deg with
p=0.5), ``u2net`` / ``u2netp`` (320x320, train random crop 288, vertical flip p=0.5, image/max then ImageNet
mean/std, nearest-resized GT / max).  tests/sod/test_train_sod.py checks them against ``SOD_MODEL_SPECS``.
Random augmentation draws from a generator seeded with
``(seed, epoch, index)`` so data order and augmentation are identical across resumes and worker counts.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .layout import sod_split_dirs

__all__ = [
    "SODSample", "PreprocessSpec", "PREPROCESS_PRESETS", "get_preprocess",
    "read_sod_split", "load_image", "load_mask", "mask_to_edge", "CarDDSODDataset", "sod_collate",
    "IMAGE_EXTS",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)


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
        entries = [[f] for f in sorted(os.listdir(d["image"])) if f.lower().endswith(IMAGE_EXTS)]
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


def _fallback_mask_to_edge(mask: np.ndarray) -> np.ndarray:
    m = (mask > 128).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(m, k) - cv2.erode(m, k)
    return (edge > 0).astype(np.uint8) * 255


def mask_to_edge(mask: np.ndarray) -> np.ndarray:
    """Edge map (uint8, 255 on mask boundaries) from a binary mask.

    Uses the model package's ``mask_to_edge`` when it exists (the same derivation SGL-KRN's loss expects), else a
    3x3 morphological gradient."""
    fn = _model_mask_to_edge()
    if fn is None:
        return _fallback_mask_to_edge(mask)
    out = fn(mask)
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    out = np.asarray(out).squeeze()
    if out.dtype != np.uint8 or out.max() <= 1:
        out = (out > 0.5 * (255 if out.max() > 1 else 1)).astype(np.uint8) * 255
    return out


def _model_mask_to_edge() -> Optional[Callable]:
    try:
        from ..losses import mask_to_edge as fn  # the model package's derivation (SGL-KRN loss)
    except Exception:
        return None
    return fn


# ----------------------------------------------------------------------------------------------- preprocessing
@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    size: Optional[tuple] = None          # (H, W) resize; None = full resolution
    resize: str = "skimage"               # skimage (order-1, anti-aliased) | cv2
    label_resize: str = "bilinear"        # bilinear (soft labels) | nearest
    crop: Optional[tuple] = None          # train random crop (H, W) after resize (U2-Net)
    side_crop: int = 0                    # train: crop 0..side_crop px per side, then resize back (CSNet)
    hflip: float = 0.0                    # train flip probabilities
    vflip: float = 0.0
    flip_lr_or_ud: float = 0.0            # CSNet: with this probability flip, lr or ud with equal chance
    rotate_deg: float = 0.0               # train: with probability rotate_p rotate by U(-deg, deg) (SGL-KRN release)
    rotate_p: float = 0.0
    color: str = "rgb"                    # rgb | bgr
    scale: str = "255"                    # 255 (x/255) | max (x/max(x), U2-Net) | none (raw 0..255)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    label_scale: str = "255"              # 255 | max
    edges: bool = False                   # also return edge maps (SGL-KRN)
    max_size: int = 0                     # full resolution: cap the longer side (0 = off)
    save_rule: str = ""                   # test: how maps are written (cardd_sod.map_saving.SAVE_RULES)


PREPROCESS_PRESETS: dict[str, PreprocessSpec] = {
    "csnet": PreprocessSpec(size=(224, 224), resize="skimage", label_resize="bilinear", side_crop=14,
                            flip_lr_or_ud=0.5, save_rule="skimage_floor"),
    "poolnet": PreprocessSpec(size=None, hflip=0.5, color="bgr", scale="none", mean=CAFFE_BGR_MEAN,
                              std=(1.0, 1.0, 1.0), save_rule="cv2_round"),
    "sgl_krn": PreprocessSpec(size=None, hflip=0.5, color="bgr", scale="none", mean=CAFFE_BGR_MEAN,
                              std=(1.0, 1.0, 1.0), edges=True, rotate_deg=25.0, rotate_p=0.5,
                              save_rule="cv2_round"),
    "u2net": PreprocessSpec(size=(320, 320), resize="skimage", label_resize="nearest", crop=(288, 288), vflip=0.5,
                            scale="max", label_scale="max", save_rule="minmax_pil"),
}
PREPROCESS_PRESETS["u2netp"] = PREPROCESS_PRESETS["u2net"]


def get_preprocess(name: str, **overrides) -> PreprocessSpec:
    key = name.lower()
    if key not in PREPROCESS_PRESETS:
        raise KeyError(f"no preprocessing preset {name!r}; known: {sorted(PREPROCESS_PRESETS)}")
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(PREPROCESS_PRESETS[key], **overrides)


def _resize_image(img: np.ndarray, hw: tuple, method: str) -> np.ndarray:
    """float32 image resized to (H, W)."""
    if tuple(img.shape[:2]) == tuple(hw):
        return img.astype(np.float32)
    if method == "skimage":
        from skimage.transform import resize
        return resize(img.astype(np.float64), hw, order=1, mode="constant", preserve_range=True,
                      anti_aliasing=True).astype(np.float32)
    return cv2.resize(img.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def _resize_label(lbl: np.ndarray, hw: tuple, method: str) -> np.ndarray:
    if tuple(lbl.shape[:2]) == tuple(hw):
        return lbl.astype(np.float32)
    if method == "nearest":
        return cv2.resize(lbl.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(lbl.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


class CarDDSODDataset(Dataset):
    """DUTS-style CarDD SOD split as tensors for one model family.

    Item: ``{"image": float[3,H,W], "mask": float[1,H,W] in [0,1], "edge": float[1,H,W] (when the preset asks),
    "name": stem, "orig_size": (H0, W0), "index": i}``.
    """

    def __init__(self, root: str, split: str, preprocess: PreprocessSpec | str, train: bool = False,
                 seed: int = 0, strict_masks: bool = False, max_images: int = 0, require_masks: bool = True):
        self.root, self.split, self.train, self.seed = root, split, train, int(seed)
        self.pp = get_preprocess(preprocess) if isinstance(preprocess, str) else preprocess
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
                edge = mask_to_edge(mask)
        return self._transform(img, mask, edge, s, index, (h0, w0))

    def _transform(self, img, mask, edge, s, index, orig_hw):
        pp, rng = self.pp, self._rng(index)
        img = img.astype(np.float32)
        lbl = mask.astype(np.float32)
        edg = edge.astype(np.float32) if edge is not None else None
        if pp.label_scale == "max":
            lbl = lbl / lbl.max() if lbl.max() > 1e-6 else lbl
        else:
            lbl = lbl / 255.0
        if edg is not None:
            edg = edg / 255.0
        if pp.size is not None:
            img = _resize_image(img, pp.size, pp.resize)
            lbl = _resize_label(lbl, pp.size, pp.label_resize)
            if edg is not None:
                edg = _resize_label(edg, pp.size, "nearest")
        elif pp.max_size and max(img.shape[:2]) > pp.max_size:
            r = pp.max_size / max(img.shape[:2])
            hw = (max(1, round(img.shape[0] * r)), max(1, round(img.shape[1] * r)))
            img = _resize_image(img, hw, "cv2")
            lbl = _resize_label(lbl, hw, "bilinear")
            if edg is not None:
                edg = _resize_label(edg, hw, "nearest")
        maps = [lbl] + ([edg] if edg is not None else [])
        if self.train:
            img, maps = self._augment(img, maps, rng)
        # colour / normalisation
        if pp.color == "bgr":
            img = img[:, :, ::-1]  # mean / std are given in the preset's channel order
        if pp.scale == "max":
            m = img.max()
            img = img / m if m > 0 else img
        elif pp.scale == "255":
            img = img / 255.0
        img = (img - np.asarray(pp.mean, np.float32)) / np.asarray(pp.std, np.float32)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(np.clip(maps[0], 0, 1)[None], dtype=np.float32)),
            "name": s.name,
            "orig_size": tuple(int(v) for v in orig_hw),
            "index": int(index),
        }
        if edg is not None:
            out["edge"] = torch.from_numpy(np.ascontiguousarray((maps[1] > 0.5)[None], dtype=np.float32))
        return out

    def _augment(self, img, maps, rng):
        pp = self.pp
        h, w = img.shape[:2]
        if pp.side_crop > 0:
            t, b, l, r = (int(v) for v in rng.integers(0, pp.side_crop + 1, size=4))
            if h - t - b >= 2 and w - l - r >= 2:
                img = img[t:h - b, l:w - r]
                maps = [m[t:h - b, l:w - r] for m in maps]
                img = _resize_image(img, (h, w), "cv2")
                maps = [_resize_label(m, (h, w), pp.label_resize) for m in maps]
        if pp.crop is not None:
            ch, cw = pp.crop
            if h < ch or w < cw:
                raise ValueError(f"crop {pp.crop} larger than the resized image {(h, w)}")
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            img = img[top:top + ch, left:left + cw]
            maps = [m[top:top + ch, left:left + cw] for m in maps]
        if pp.hflip > 0 and rng.random() < pp.hflip:
            img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
        if pp.vflip > 0 and rng.random() < pp.vflip:
            img, maps = img[::-1], [m[::-1] for m in maps]
        if pp.rotate_p > 0 and rng.random() < pp.rotate_p:
            angle = float(rng.uniform(-pp.rotate_deg, pp.rotate_deg))
            hh, ww = img.shape[:2]
            rot = cv2.getRotationMatrix2D(((ww - 1) / 2.0, (hh - 1) / 2.0), angle, 1.0)
            img = cv2.warpAffine(np.ascontiguousarray(img), rot, (ww, hh), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            maps = [cv2.warpAffine(np.ascontiguousarray(m), rot, (ww, hh), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0) for m in maps]
        if pp.flip_lr_or_ud > 0 and rng.random() < pp.flip_lr_or_ud:
            if rng.random() < 0.5:
                img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
            else:
                img, maps = img[::-1], [m[::-1] for m in maps]
        return img, maps


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
