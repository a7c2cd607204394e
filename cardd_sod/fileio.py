"""File facts both packages share (cardd_sod imports no detectron2, so cardd_d2 imports these from here):
atomic writes, so that a reader (or a crash half-way) never sees a half-written file, and the image file
extensions cardd reads."""
from __future__ import annotations

import contextlib
import json
import os
import threading

__all__ = ["IMAGE_EXTENSIONS", "atomic_open", "atomic_save_json", "atomic_torch_save"]

# Lower-case extensions of the image files cardd picks up from folders (inputs, SOD splits, saliency maps).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".jfif")


@contextlib.contextmanager
def atomic_open(path: str, binary: bool = False):
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path``, on an error it is removed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Same folder (os.replace is atomic within a file system); created by open() so the umask applies.
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_save_json(obj, path: str, **dump_kwargs) -> str:
    with atomic_open(path) as f:
        json.dump(obj, f, **dump_kwargs)
    return path


def atomic_torch_save(obj, path: str) -> str:
    import torch

    with atomic_open(path, binary=True) as f:
        torch.save(obj, f)
    return path
