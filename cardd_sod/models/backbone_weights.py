"""ImageNet weights for the caffe ResNet-50 of PoolNet / SGL-KRN: where they come from and how they map.

The released PoolNet / SGL-KRN training starts the backbone from the MSRA caffe ResNet-50 (ImageNet).  Two files
are accepted:

* ``.pkl``: the MSRA ResNet-50 as detectron2 distributes it (:data:`MSRA_R50`, the default of the SOD config key
  ``MODEL.BACKBONE_WEIGHTS``): numpy arrays under Caffe2 names (``conv1_w``, ``res_conv1_bn_{s,b}``,
  ``res<2-5>_<block>_branch{1,2a,2b,2c}_{w,bn_s,bn_b}``, ``fc1000_{w,b}``), as a bare dict or wrapped in
  ``{"blobs": ...}`` / ``{"model": ..., "__author__": ...}``.  Each batch norm is stored folded into a per-channel
  scale ``s`` and shift ``b``; it becomes a frozen batch norm with weight ``s``, bias ``b``, mean 0 and variance
  ``1 - eps``, i.e. exactly ``s * x + b``.  The classifier (``fc1000_*``) and solver state (``*_momentum``) are
  skipped.  The pickle is read with an unpickler that only admits numpy arrays.
* anything else: a caffe ResNet-50 ``torch.save`` state dict in this package's module names (PoolNet's
  ``resnet50_caffe.pth``), optionally wrapped in ``{"state_dict"|"model": ...}`` and prefixed ``module.``,
  ``base.resnet.``, ``resnet.`` or ``backbone.``; ``fc.*`` is skipped.

Names may be local paths or URLs: ``detectron2://X`` stands for https://dl.fbaipublicfiles.com/detectron2/X;
``http(s)://`` files are downloaded once through iopath and cached under ``$FVCORE_CACHE`` (default
``~/.torch/iopath_cache``), in the sub-folder given by the URL path.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Dict, List, Tuple
from urllib.parse import urlparse

import torch
from iopath.common.file_io import HTTPURLHandler, PathHandler, get_cache_dir
from iopath.common.file_io import PathManager as PathManagerBase
from torch import nn

from .layers import FrozenBatchNorm2d

__all__ = ["MSRA_R50", "CONFIG_KEY", "resolve_backbone_weights", "load_backbone_weights", "msra_to_state_dict",
           "msra_name", "cached_path"]

logger = logging.getLogger(__name__)

MSRA_R50 = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
CONFIG_KEY = "MODEL.BACKBONE_WEIGHTS"
_D2_PREFIX = "detectron2://"
_D2_URL = "https://dl.fbaipublicfiles.com/detectron2/"
_STATE_DICT_PREFIXES = ("module.", "base.resnet.", "resnet.", "backbone.")
# MSRA blobs that are not part of the feature extractor
_MSRA_SKIPPED = ("fc1000_w", "fc1000_b")


class _Detectron2URLHandler(PathHandler):
    """``detectron2://X`` -> the https URL detectron2's model zoo serves X from."""

    def __init__(self, manager: PathManagerBase):
        super().__init__()
        self._manager = manager

    def _get_supported_prefixes(self) -> List[str]:
        return [_D2_PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        return self._manager.get_local_path(_D2_URL + path[len(_D2_PREFIX):], **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs):
        return self._manager.open(_D2_URL + path[len(_D2_PREFIX):], mode, **kwargs)


def _path_manager() -> PathManagerBase:
    # a fresh manager per call: HTTPURLHandler memoises local paths, which must follow $FVCORE_CACHE
    pm = PathManagerBase()
    pm.register_handler(HTTPURLHandler())
    pm.register_handler(_Detectron2URLHandler(pm))
    return pm


def _url(name: str) -> str:
    return _D2_URL + name[len(_D2_PREFIX):] if name.startswith(_D2_PREFIX) else name


def cached_path(name: str) -> str:
    """Where the download cache keeps (or would keep) the file of URL ``name``."""
    url = _url(name)
    parsed = urlparse(url)
    return os.path.join(get_cache_dir(), os.path.dirname(parsed.path.lstrip("/")), url.split("/")[-1])


def resolve_backbone_weights(name: str) -> str:
    """Local file for ``name`` (a path, ``detectron2://`` or ``http(s)://`` URL); downloads URLs once.

    Raises ``FileNotFoundError`` naming the config key, the URL and where to put the file when it cannot be had."""
    name = os.fspath(name)
    url = _url(name)
    if not url.startswith(("http://", "https://")):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"backbone weights file not found: {name} ({CONFIG_KEY} / backbone_weights)")
        return name
    try:
        return _path_manager().get_local_path(name)
    except OSError as exc:
        raise FileNotFoundError(
            f"{CONFIG_KEY} = {name!r}: cannot download {url} ({exc}). Without internet access, fetch that URL on "
            f"another machine and put the file at {cached_path(name)} (cache folder: $FVCORE_CACHE, default "
            f"~/.torch/iopath_cache), or set {CONFIG_KEY} to a local copy; {CONFIG_KEY} '' starts the backbone from "
            f"random weights") from exc


# ---------------------------------------------------------------------------------------------------- MSRA .pkl
class _NumpyUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
                ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 store array bytes through it

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")
        if module.startswith("numpy._core"):  # pickles written by numpy 2 read under numpy 1
            try:
                return super().find_class(module, name)
            except ModuleNotFoundError:
                module = "numpy.core" + module[len("numpy._core"):]
        return super().find_class(module, name)


def _read_msra_pickle(path: str) -> Dict[str, object]:
    try:
        with open(path, "rb") as f:
            data = _NumpyUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"backbone weights file {path} could not be read as a pickle of numpy arrays: {exc}") from exc
    if isinstance(data, dict) and "model" in data and "__author__" in data:
        data = data["model"]
    elif isinstance(data, dict) and "blobs" in data:
        data = data["blobs"]
    if not isinstance(data, dict):
        raise ValueError(f"backbone weights file {path} holds a {type(data).__name__}, expected a dict of arrays")
    return {k: v for k, v in data.items() if not k.endswith("_momentum")}


def msra_name(module_name: str) -> str:
    """Caffe2 blob prefix of one module of :class:`~cardd_sod.models.resnet_caffe.CaffeResNet50`.

    ``conv1`` -> ``conv1``, ``bn1`` -> ``res_conv1_bn``, ``layer2.0.conv1`` -> ``res3_0_branch2a``,
    ``layer2.0.bn1`` -> ``res3_0_branch2a_bn``, ``layer2.0.downsample.0`` / ``.1`` -> ``res3_0_branch1(_bn)``."""
    if module_name == "conv1":
        return "conv1"
    if module_name == "bn1":
        return "res_conv1_bn"
    layer, block, *rest = module_name.split(".")
    stage = int(layer[len("layer"):]) + 1
    if rest[0] == "downsample":
        return f"res{stage}_{block}_branch1" + ("_bn" if rest[1] == "1" else "")
    kind, k = rest[0][:-1], int(rest[0][-1])
    return f"res{stage}_{block}_branch2{'abc'[k - 1]}" + ("_bn" if kind == "bn" else "")


def msra_to_state_dict(resnet: nn.Module, blobs: Dict[str, object], source: str) -> Tuple[Dict[str, torch.Tensor],
                                                                                          List[str]]:
    """State dict for ``resnet`` from MSRA blobs; returns (state dict, skipped blob names).  Missing / unexpected
    blobs and shape mismatches raise ``ValueError`` naming ``source``."""
    sd: Dict[str, torch.Tensor] = {}
    used, missing, bad_shape = set(), [], []

    def take(blob: str, like: torch.Tensor, into: str) -> None:
        if blob not in blobs:
            missing.append(blob)
            return
        t = torch.as_tensor(blobs[blob]).to(like.dtype).clone()
        used.add(blob)
        if t.shape != like.shape:
            bad_shape.append(f"{blob}: file {tuple(t.shape)} vs model {into} {tuple(like.shape)}")
            return
        sd[into] = t

    for name, m in resnet.named_modules():
        if isinstance(m, nn.Conv2d):
            take(msra_name(name) + "_w", m.weight, f"{name}.weight")
            if m.bias is not None:
                take(msra_name(name) + "_b", m.bias, f"{name}.bias")
        elif isinstance(m, FrozenBatchNorm2d):
            prefix = msra_name(name)
            take(prefix + "_s", m.weight, f"{name}.weight")
            take(prefix + "_b", m.bias, f"{name}.bias")
            sd[f"{name}.running_mean"] = torch.zeros_like(m.running_mean)
            sd[f"{name}.running_var"] = torch.full_like(m.running_var, 1.0 - m.eps)  # (var + eps) == 1
    skipped = sorted(k for k in blobs if k in _MSRA_SKIPPED)
    unexpected = sorted(k for k in blobs if k not in used and k not in _MSRA_SKIPPED)
    _raise_on_mismatch(f"backbone weights file {source} is not the MSRA caffe ResNet-50", "blobs",
                       sorted(missing), unexpected, bad_shape)
    return sd, skipped


def _raise_on_mismatch(problem: str, noun: str, missing: List[str], unexpected: List[str], bad_shape: List[str]):
    """One error listing what a weights file lacks, has in excess, or has in the wrong shape (nothing: no error)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing {noun} (e.g. {missing[:5]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected {noun} (e.g. {unexpected[:5]})")
    if bad_shape:
        parts.append(f"{len(bad_shape)} shape mismatches (e.g. {bad_shape[:3]})")
    if parts:
        raise ValueError(f"{problem}: " + "; ".join(parts))


# ------------------------------------------------------------------------------------------ torch state dict
def _read_state_dict(path: str, resnet: nn.Module) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"backbone weights file {path} could not be read as a torch state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"backbone weights file {path} does not contain a state dict of tensors")
    sd = {}
    for k, v in obj.items():
        for p in _STATE_DICT_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        sd[k] = v
    skipped = sorted(k for k in sd if k.startswith("fc."))
    for k in skipped:
        sd.pop(k)
    expected = resnet.state_dict()
    missing = sorted(k for k in expected if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in expected)
    bad_shape = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                       for k in sd if k in expected and sd[k].shape != expected[k].shape)
    _raise_on_mismatch(f"backbone weights file {path} does not match the caffe ResNet-50", "keys",
                       missing, unexpected, bad_shape)
    return sd, skipped


def load_backbone_weights(resnet: nn.Module, name: str) -> dict:
    """Load ImageNet weights into a :class:`~cardd_sod.models.resnet_caffe.CaffeResNet50` (strictly).

    ``name``: path or URL (see the module docstring).  Returns a report: ``{"file", "format" ("msra" |
    "state_dict"), "tensors_read" (file tensors used), "entries_set" (state-dict entries written), "skipped"}``."""
    path = resolve_backbone_weights(name)
    if path.endswith(".pkl"):
        blobs = _read_msra_pickle(path)
        sd, skipped = msra_to_state_dict(resnet, blobs, path)
        fmt, read = "msra", len(blobs) - len(skipped)
    else:
        sd, skipped = _read_state_dict(path, resnet)
        fmt, read = "state_dict", len(sd)
    resnet.load_state_dict(sd, strict=False)
    report = {"file": path, "format": fmt, "tensors_read": read, "entries_set": len(sd), "skipped": skipped}
    logger.info("backbone: %d tensors from %s (%s), %d state-dict entries set, skipped %s", read, path, fmt,
                len(sd), skipped)
    return report
