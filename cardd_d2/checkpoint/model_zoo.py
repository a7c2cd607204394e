"""Starting checkpoints from mmdetection's model zoo, addressed as ``mmdet://<file name>``.

The paper's released configs fine-tune mmdetection 2.x COCO checkpoints (``load_from``). The cardd paper configs name
the same files, e.g. ``MODEL.WEIGHTS "mmdet://mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco_20200216-a71f5bce"``, and the
path handler registered here with detectron2's ``PathManager`` turns that name into a detectron2 checkpoint:

1. the published URL is derived from the file name (``{MMDET_URL_ROOT}<family>/<config>/<file>.pth``, where
   ``<config>`` is the name up to ``_coco`` and ``<family>`` the model-zoo folder, see :func:`mmdet_checkpoint_url`);
2. the file is downloaded once to ``<cache>/<file>.pth`` (:func:`mmdet_cache_dir`), or taken from there when a user
   put it there by hand (machines without internet access);
3. its sha256 must start with the 8 hex digits at the end of the name (mmdetection's publishing convention);
4. it is converted once with :mod:`cardd_d2.checkpoint.mmdet_convert` to ``<cache>/converted/<file>.pth``, keeping
   every tensor (class-specific predictors included): detectron2's checkpointer then skips the tensors whose shape
   differs from the model (80 COCO classes vs. 6), as mmdetection's ``load_from`` does, and keeps the ones that fit
   (e.g. the class-agnostic cascade box regressors).

``<cache>`` is ``$FVCORE_CACHE/cardd/mmdet`` (detectron2's download cache; default ``~/.torch/iopath_cache``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from urllib import request

from detectron2.utils.file_io import PathHandler, PathManager
from iopath.common.file_io import file_lock, get_cache_dir

from cardd_sod.fileio import atomic_open

from .mmdet_convert import MmdetConversionError, convert_mmdet_checkpoint

__all__ = [
    "MMDET_PREFIX",
    "MMDET_URL_ROOT",
    "MmdetZooError",
    "MmdetZooHandler",
    "mmdet_cache_dir",
    "mmdet_checkpoint_url",
    "parse_mmdet_name",
    "resolve_mmdet_checkpoint",
]

logger = logging.getLogger(__name__)

MMDET_PREFIX = "mmdet://"
MMDET_URL_ROOT = "https://download.openmmlab.com/mmdetection/v2.0/"

# mmdetection model-zoo folder of a config, by the first rule whose pattern occurs in the config name.
_FAMILY_RULES = (
    (r"^cascade_", "cascade_rcnn"),
    (r"^htc_", "htc"),
    (r"_gcb_", "gcnet"),
    (r"_dconv_|_mdconv_", "dcn"),
    (r"^mask_rcnn_", "mask_rcnn"),
)
_NAME_RE = re.compile(r"(?P<config>[A-Za-z0-9_.-]+?_coco)(?:_[A-Za-z0-9_.-]*)?-(?P<sha>[0-9a-f]{8})")


class MmdetZooError(OSError):
    """An ``mmdet://`` checkpoint that cannot be provided; the message names the URL, the file and the cache path."""


def parse_mmdet_name(name: str):
    """``(file stem, config name, sha256 prefix)`` of an mmdetection checkpoint file name (with or without
    ``mmdet://`` and ``.pth``)."""
    stem = name[len(MMDET_PREFIX):] if name.startswith(MMDET_PREFIX) else name
    if stem.endswith(".pth"):
        stem = stem[: -len(".pth")]
    m = _NAME_RE.fullmatch(stem)
    if m is None:
        raise MmdetZooError(
            f"{name!r} is not an mmdetection checkpoint file name: expected '<config>_coco[_...]-<8 hex digits of "
            "its sha256>', e.g. mmdet://mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco_20200203-4d9ad43b"
        )
    return stem, m.group("config"), m.group("sha")


def mmdet_checkpoint_url(name: str) -> str:
    """Published download URL of an mmdetection 2.x COCO checkpoint, from its file name."""
    stem, config, _ = parse_mmdet_name(name)
    for pattern, family in _FAMILY_RULES:
        if re.search(pattern, config):
            return f"{MMDET_URL_ROOT}{family}/{config}/{stem}.pth"
    raise MmdetZooError(
        f"{name!r}: no mmdetection model-zoo folder is known for config {config!r} (known: "
        f"{sorted({f for _, f in _FAMILY_RULES})}); convert the file with tools/convert_mmdet_to_d2.py and set "
        "MODEL.WEIGHTS to the converted file"
    )


def mmdet_cache_dir() -> str:
    """Where ``mmdet://`` checkpoints are downloaded to (and where to put them by hand when offline)."""
    return os.path.join(get_cache_dir(), "cardd", "mmdet")


def _sha256_prefix(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:8]


def _download(url: str, dst: str, stem: str) -> None:
    try:
        with request.urlopen(url, timeout=60) as response, atomic_open(dst, binary=True) as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, ValueError) as e:  # URLError / HTTPError / timeouts are OSErrors
        raise MmdetZooError(
            f"cannot download the starting checkpoint {url} ({e}). Without internet access, download that URL on "
            f"another machine and put the file, named {stem}.pth, at {dst} (the cache folder is "
            f"$FVCORE_CACHE/cardd/mmdet, default ~/.torch/iopath_cache/cardd/mmdet); it is checked and converted "
            "on first use. Or set MODEL.WEIGHTS to a checkpoint file of your own."
        ) from e


def resolve_mmdet_checkpoint(name: str) -> str:
    """Local path of the converted (detectron2) checkpoint for ``mmdet://<file name>``; downloads, checks and
    converts on first use (see the module docstring)."""
    stem, _, sha = parse_mmdet_name(name)
    url = mmdet_checkpoint_url(name)
    cache = mmdet_cache_dir()
    original = os.path.join(cache, stem + ".pth")
    converted = os.path.join(cache, "converted", stem + ".pth")
    with file_lock(converted):  # concurrent training processes convert once
        if os.path.isfile(converted):
            return converted
        downloaded = not os.path.isfile(original)
        if downloaded:
            logger.info("Downloading %s to %s", url, original)
            _download(url, original, stem)
        actual = _sha256_prefix(original)
        if actual != sha:
            if downloaded:
                os.remove(original)
            raise MmdetZooError(
                f"{original}: sha256 starts with {actual}, but the file name says {sha}: the file is damaged or is "
                f"not the published {stem}.pth. " + (
                    "It was removed; retry the download." if downloaded else
                    f"Delete it and download {url} again."
                )
            )
        logger.info("Converting %s to detectron2 names: %s", original, converted)
        try:
            convert_mmdet_checkpoint(original, converted)  # written atomically
        except MmdetConversionError as e:
            raise MmdetZooError(
                f"{e}\nThe converted file is looked for at {converted}; to convert by hand: python "
                f"tools/convert_mmdet_to_d2.py {original} {converted} (--trust-pickle only for a file you trust)"
            ) from e
        return converted


class MmdetZooHandler(PathHandler):
    """``mmdet://<file name>`` -> converted local checkpoint (see :func:`resolve_mmdet_checkpoint`)."""

    PREFIX = MMDET_PREFIX

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _get_local_path(self, path, **kwargs):
        return resolve_mmdet_checkpoint(path)

    def _open(self, path, mode="r", **kwargs):
        return PathManager.open(resolve_mmdet_checkpoint(path), mode, **kwargs)


PathManager.register_handler(MmdetZooHandler())
