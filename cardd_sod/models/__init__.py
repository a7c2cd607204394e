"""SOD model registry: ``build_sod_model(name, **kwargs)``, ``list_sod_models()``, ``get_sod_spec(name)``.

Models (re-implementations of the released architectures, same parameter counts):

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
the network input size; resizing back to the original image is the data pipeline's job) and one
:class:`~cardd_sod.models.spec.SODModelSpec` (``get_sod_spec(name)``): preprocessing, loss name, iter_size, outputs,
input size rules, ImageNet backbone (PoolNet, SGL-KRN: ``backbone_weights=``, see :mod:`.backbone_weights`).
Other models (e.g. tests' stand-ins) register with :func:`register_sod_model`.
"""
from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn

from . import csnet as _csnet
from . import poolnet as _poolnet
from . import sgl_krn as _sgl_krn
from . import u2net as _u2net
from .layers import count_parameters
from .spec import SODModelSpec

__all__ = ["build_sod_model", "list_sod_models", "register_sod_model", "get_sod_spec", "SODModelSpec",
           "SOD_PARAM_COUNTS", "count_parameters"]

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}
_SPECS: Dict[str, SODModelSpec] = {}

# Parameter counts of the released models, keyed like build_sod_model's names (+ CSNet variants).
SOD_PARAM_COUNTS = {
    "csnet": 788_631,
    "csnet:L-x2": 140_894,
    "csnet:L-x1": 93_647,
    "poolnet": 68_261_057,
    "u2net": 44_009_869,
    "u2netp": 1_131_181,
    "sgl_krn": 55_795_274,
}


def register_sod_model(name: str, factory: Callable[..., nn.Module], spec: SODModelSpec) -> None:
    """Make ``factory(**kwargs)`` available as ``build_sod_model(name)`` with ``spec`` for the trainer."""
    if name in _REGISTRY:
        raise KeyError(f"SOD model {name!r} is already registered")
    if not isinstance(spec, SODModelSpec):
        raise TypeError(f"SOD model {name!r}: spec must be a SODModelSpec, got {type(spec).__name__}")
    _REGISTRY[name] = factory
    _SPECS[name] = spec


def get_sod_spec(name: str) -> SODModelSpec:
    key = str(name).lower()
    if key not in _SPECS:
        raise KeyError(f"unknown SOD model {name!r}; available: {list_sod_models()}")
    return _SPECS[key]


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
register_sod_model("u2netp", _u2net.build_u2netp, _u2net.SPEC)
