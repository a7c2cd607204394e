"""Robust image reading and input discovery for the demo, the assessment and the service.

``load_image`` returns a BGR uint8 array (what detectron2's ``DefaultPredictor`` takes) for any image PIL can decode,
whatever its mode (grayscale, palette, RGBA, 16-bit, CMYK, ...), with EXIF orientation applied and very large images
downscaled; every conversion is reported as a human-readable warning. Anything that cannot be decoded raises
:class:`ImageLoadError` with the file name and the reason.
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings as _warnings
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from cardd_sod.fileio import IMAGE_EXTENSIONS

__all__ = [
    "IMAGE_EXTENSIONS",
    "LIST_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageLoadError",
    "InputItem",
    "LoadedImage",
    "discover_inputs",
    "load_image",
    "unique_names",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")
LIST_EXTENSIONS = (".txt", ".lst", ".list")

# Longer side above which images are downscaled (to exactly this size) before inference.
DEFAULT_MAX_SIDE = 10000
# Largest image (width x height, before downscaling) that is decoded: 200 MP covers 108 MP and 200 MP phone photos.
# JPEGs larger than max_side are decoded at a reduced scale (draft mode); other formats are decoded in full.
MAX_PIXELS = 200_000_000

# Pillow's own decompression-bomb limit is a module global; it is raised to MAX_PIXELS while this module decodes.
_PIL_LIMIT_LOCK = threading.Lock()


class ImageLoadError(Exception):
    """An input that cannot be used as an image; ``reason`` is a short human-readable explanation."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class LoadedImage:
    bgr: np.ndarray  # HxWx3 uint8, BGR, orientation applied, possibly downscaled
    source: str
    original_size: Tuple[int, int]  # (h, w) after EXIF orientation, before downscaling
    scale: float = 1.0  # size(bgr) / original_size
    warnings: List[str] = field(default_factory=list)
    mode: str = ""

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])


def _to_rgb_array(img, notes: List[str]) -> np.ndarray:
    """Convert a loaded PIL image of any mode to an HxWx3 uint8 RGB array."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        if mode.startswith("I;16") or hi > 255:
            # 16-bit (or wider) samples: map the 16-bit range to 8 bits.
            arr = arr / 257.0
            notes.append(f"converted {mode} (16-bit) to 8-bit RGB")
        else:
            notes.append(f"converted {mode} to 8-bit RGB")
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white so transparent regions do not turn into arbitrary colours.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append(f"converted {mode} to RGB (alpha composited on white)")
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"), dtype=np.uint8)
    if mode == "CMYK":
        notes.append("converted CMYK to RGB")
    elif mode in ("L", "1"):
        notes.append(f"converted grayscale ({mode}) to RGB")
    else:
        notes.append(f"converted {mode} to RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _signature(source) -> str:
    """Name of the image format whose magic bytes start ``source`` (path or bytes), or ''."""
    try:
        if isinstance(source, (bytes, bytearray)):
            head = bytes(source[:16])
        else:
            with open(source, "rb") as f:
                head = f.read(16)
    except OSError:
        return ""
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return "WEBP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else ""


@contextlib.contextmanager
def _pil_pixel_limit(Image):
    with _PIL_LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def load_image(source: Union[str, os.PathLike, bytes], max_side: int = DEFAULT_MAX_SIDE, name: Optional[str] = None):
    """Read ``source`` (a path or the bytes of an encoded image) into a :class:`LoadedImage`.

    Images larger than ``max_side`` are downscaled (JPEGs already while decoding); images of more than
    :data:`MAX_PIXELS` pixels are refused. Raises :class:`ImageLoadError` for missing files, non-images,
    truncated/corrupt files and images beyond that limit.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "<upload>")
    notes: List[str] = []
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageLoadError(label, "empty file")
        fp = io.BytesIO(source)
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ImageLoadError(label, "file not found")
        if os.path.isdir(path):
            raise ImageLoadError(label, "is a directory, not an image")
        if os.path.getsize(path) == 0:
            raise ImageLoadError(label, "empty file")
        fp = path
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with the size
            with _pil_pixel_limit(Image):  # Pillow checks the size when it opens a file
                img = Image.open(fp)
            with img:
                fmt = img.format or "?"
                mode0 = img.mode
                w0, h0 = img.size
                if w0 * h0 > MAX_PIXELS:
                    raise ImageLoadError(label, f"image too large: {w0}x{h0} = {w0 * h0 / 1e6:.3g} MP, more than "
                                                f"the limit of {MAX_PIXELS / 1e6:g} MP")
                if max(w0, h0) > max_side and fmt == "JPEG":
                    # Let the JPEG decoder shrink by a power of two while decoding (never below max_side).
                    img.draft(img.mode, (max(1, w0 * max_side // max(w0, h0)), max(1, h0 * max_side // max(w0, h0))))
                img.load()
                orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
                img2 = ImageOps.exif_transpose(img)
                if img2 is None:  # very old Pillow transposes in place
                    img2 = img
                if orientation not in (None, 1):
                    notes.append(f"EXIF orientation {orientation} applied")
                rgb = _to_rgb_array(img2, notes)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        kind = _signature(source)
        if kind:
            raise ImageLoadError(label, f"corrupt image ({kind} signature, but the data cannot be decoded)") from None
        raise ImageLoadError(label, "not an image (cannot identify the file format)") from None
    except Image.DecompressionBombError:
        raise ImageLoadError(label, f"image too large: more than the limit of {MAX_PIXELS / 1e6:g} MP") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageLoadError(label, f"truncated or corrupt image ({msg})") from None
        raise ImageLoadError(label, f"corrupt or unreadable image ({msg})") from None

    # Full-size dimensions after orientation (a JPEG draft may have decoded a smaller image).
    oh, ow = (w0, h0) if orientation in (5, 6, 7, 8) else (h0, w0)
    scale = 1.0
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        import cv2

        s = max_side / float(max(h, w))
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    if (h, w) != (oh, ow):
        scale = w / float(ow)
        notes.append(f"downscaled from {ow}x{oh} to {w}x{h} (longer side limit {max_side} px); "
                     "coordinates refer to the downscaled image")
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if min(h, w) < 1:
        raise ImageLoadError(label, "image has zero width or height")
    return LoadedImage(bgr=bgr, source=label, original_size=(int(oh), int(ow)), scale=scale, warnings=notes,
                       mode=f"{fmt}/{mode0}")


@dataclass
class InputItem:
    path: str
    name: str = ""  # unique output name (no extension), filled by discover_inputs
    skip_reason: Optional[str] = None  # set when the item is recorded but not processed
    error: Optional[str] = None  # set when the item itself is a problem (missing path, empty folder, ...)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_folder(folder: str) -> List[str]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for n in sorted(names):
            if not _is_hidden(n):
                files.append(os.path.join(root, n))
    return files


def _read_list_file(path: str) -> List[str]:
    base = os.path.dirname(os.path.abspath(path))
    out = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            out.append(line if os.path.isabs(line) else os.path.join(base, line))
    return out


def discover_inputs(inputs: Union[str, Sequence[str]], allow_videos: bool = False) -> List[InputItem]:
    """Expand image paths, folders (recursive), glob patterns and list files into :class:`InputItem` s.

    Folders contribute every non-hidden file: files without an image extension are kept as *skipped* items (so the
    report says why they were not used); an empty folder or a missing path becomes an item with ``error`` set.
    Every item gets a unique ``name`` (see :func:`unique_names`).
    """
    import glob as _glob

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [os.fspath(inputs)]
    items: List[InputItem] = []
    exts = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if allow_videos else ())
    for raw in inputs:
        raw = os.fspath(raw)
        if os.path.isdir(raw):
            files = _walk_folder(raw)
            if not files:
                items.append(InputItem(raw, error="empty folder (no files)"))
                continue
            n_images = 0
            for f in files:
                if f.lower().endswith(exts):
                    items.append(InputItem(f))
                    n_images += 1
                else:
                    items.append(InputItem(f, skip_reason=f"not an image file (extension '{os.path.splitext(f)[1]}')"))
            if n_images == 0:
                items.append(InputItem(raw, error="folder contains no image files"))
        elif os.path.isfile(raw):
            if raw.lower().endswith(LIST_EXTENSIONS):
                try:
                    listed = _read_list_file(raw)
                except (OSError, UnicodeDecodeError) as e:
                    items.append(InputItem(raw, error=f"cannot read list file ({e})"))
                    continue
                if not listed:
                    items.append(InputItem(raw, error="list file names no images"))
                for p in listed:
                    items.append(InputItem(p) if os.path.isfile(p) else InputItem(p, error="file not found"))
            else:
                items.append(InputItem(raw))  # explicit files are always tried (and fail loudly if not images)
        elif any(ch in raw for ch in "*?["):
            matches = sorted(p for p in _glob.glob(os.path.expanduser(raw), recursive=True) if os.path.isfile(p))
            if not matches:
                items.append(InputItem(raw, error="glob pattern matches no files"))
            items.extend(InputItem(p) for p in matches)
        else:
            items.append(InputItem(raw, error="file not found"))
    for item, name in zip(items, unique_names([it.path for it in items])):
        item.name = name
    return items


def unique_names(paths: Iterable[str]) -> List[str]:
    """Short unique output stems for ``paths``: the file stem, or ``parent__stem`` (then ``_2``, ``_3``...) on clashes."""
    paths = list(paths)
    stems = [os.path.splitext(os.path.basename(os.path.normpath(p)))[0] or "input" for p in paths]
    counts = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    names, used = [], set()
    for p, s in zip(paths, stems):
        cand = s
        if counts[s] > 1:
            parent = os.path.basename(os.path.dirname(os.path.abspath(p))) or "root"
            cand = f"{parent}__{s}"
        base, k = cand, 2
        while cand in used:
            cand = f"{base}_{k}"
            k += 1
        used.add(cand)
        names.append(cand)
    return names
