"""SOD model registry: ``build_sod_model(name, **kwargs)``, ``list_sod_models()``, ``SOD_MODEL_SPECS``.

Models (re-implementations of the reference architectures, parameter counts as in /work/shared/spec/sod.md):

=========  ==================  ===========================================================================
name       params              output of ``forward(x)``
=========  ==================  ===========================================================================
csnet      788,631             one logit map [B,1,H,W] (``variant="L-x2"``: 140,894, ``"L-x1"``: 93,647)
poolnet    68,261,057          one logit map [B,1,H,W] (53,120 of the params are frozen BN)
u2net      44,009,869          tuple of 7 sigmoid maps (d0 fused, d1..d6 side), each [B,1,H,W]
u2netp     1,131,181           same as u2net
sgl_krn    55,795,274          tuple of 10 sigmoid maps: final, merged solid, (solid_k, contour_k) k=1..4
=========  ==================  ===========================================================================

Every model has ``model.saliency(outputs) -> [B,1,H,W]`` in [0, 1] (the reference test script's prediction at
the network input size; resizing back to the original image is the data pipeline's job) and a ``SPEC`` dict
(also in ``SOD_MODEL_SPECS[name]``) describing input conventions:

* ``input_size``: (H, W) the reference resizes to, or None (full resolution);
* ``normalize``: ``{"color": "RGB"|"BGR", "scale": factor applied to 0-255 pixels, "mean", "std"}`` - the network
  input is ``(pixels_0_255 * scale - mean) / std`` in the given channel order (U2-Net divides by the image max
  instead of 255: ``scale == "max"``);
* ``expects_0_255``: True when mean/std are in 0-255 units (caffe style);
* ``min_input_size`` / ``size_divisor``: the smallest H and W the architecture accepts (per side) and the
  divisor H and W must have; smaller / non-divisible inputs raise ``ValueError``;
* ``output``: kind (``"logits"`` or ``"sigmoid"``), count, names;
* ``iter_size``: images whose gradients the reference accumulates before one optimizer step (trainer's job);
* ``loss``: the name for :func:`cardd_sod.losses.build_sod_loss`.
* ``imagenet_backbone`` (PoolNet, SGL-KRN): the constructor takes ``backbone_weights=`` (ImageNet caffe ResNet-50,
  see :mod:`.backbone_weights`); the trainer passes the config's ``MODEL.BACKBONE_WEIGHTS``.
"""
from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn

from . import csnet as _csnet
from . import poolnet as _poolnet
from . import sgl_krn as _sgl_krn
from . import u2net as _u2net
from .layers import count_parameters

__all__ = ["build_sod_model", "list_sod_models", "register_sod_model", "SOD_MODEL_SPECS", "SOD_PARAM_COUNTS",
           "count_parameters"]

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}
SOD_MODEL_SPECS: Dict[str, Dict] = {}

# Parameter counts of the reference models (sod.md), keyed like build_sod_model's names (+ CSNet variants).
SOD_PARAM_COUNTS = {
    "csnet": 788_631,
    "csnet:L-x2": 140_894,
    "csnet:L-x1": 93_647,
    "poolnet": 68_261_057,
    "u2net": 44_009_869,
    "u2netp": 1_131_181,
    "sgl_krn": 55_795_274,
}


def register_sod_model(name: str, factory: Callable[..., nn.Module], spec: Dict) -> None:
    if name in _REGISTRY:
        raise KeyError(f"SOD model {name!r} is already registered")
    _REGISTRY[name] = factory
    SOD_MODEL_SPECS[name] = spec


def list_sod_models() -> List[str]:
    return sorted(_REGISTRY)


def build_sod_model(name: str, **kwargs) -> nn.Module:
    """Build SOD model ``name`` (see :func:`list_sod_models`); ``kwargs`` go to the model's constructor
    (e.g. ``variant="L-x2"`` / ``layer_config=`` for csnet, ``backbone_weights=path`` for poolnet / sgl_krn)."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown SOD model {name!r}; available: {list_sod_models()}")
    return _REGISTRY[key](**kwargs)


register_sod_model("csnet", _csnet.CSNet, _csnet.SPEC)
register_sod_model("poolnet", _poolnet.PoolNet, _poolnet.SPEC)
register_sod_model("sgl_krn", _sgl_krn.SGLKRN, _sgl_krn.SPEC)
register_sod_model("u2net", _u2net.build_u2net, _u2net.SPEC)
register_sod_model("u2netp", _u2net.build_u2netp, _u2net.SPEC_P)
