"""Deformable convolution (DCNv1 / DCNv2) on ``torchvision.ops.deform_conv2d`` or on differentiable PyTorch ops.

The two modules here are drop-in replacements for ``detectron2.layers.DeformConv`` and
``detectron2.layers.ModulatedDeformConv``: same constructor arguments, same parameter names (``weight``,
``bias``, ``norm.*``), same ``forward(x, offset)`` / ``forward(x, offset, mask)`` signatures, same ``repr``.
They work without detectron2's compiled ``_C`` and run on CPU and CUDA, forward and backward.

Kernels ("backend", a plain attribute of each module, not part of its state dict):

* ``"torchvision"``: ``torchvision.ops.deform_conv2d`` (the default of :class:`DeformConv` /
  :class:`ModulatedDeformConv`);
* ``"sampling"``: ``F.grid_sample`` at the displaced kernel points + a matrix product with the weight, backward by
  autograd (``deform_sampling.py``).  Same results as torchvision's kernel to float rounding; on CPU its
  training step (forward + backward) is several times faster than torchvision's, whose CPU backward is slow;
* ``"auto"``: decided at every call by the input's device: torchvision on CUDA, "sampling" elsewhere, so a model
  moved to the GPU switches kernel with it.

``get_deform_conv_classes`` maps ``MODEL.RESNETS.DEFORM_BACKEND`` to module classes: detectron2's compiled
modules for "detectron2" (and for "auto" when ``_C`` is importable), else subclasses of the two modules here whose
default backend is the configured one (same parameter names, so state dicts are interchangeable).

Offset layout (identical in detectron2, mmcv and torchvision): for deformable group ``g`` and kernel point
``k = i * kernel_w + j`` the offset tensor holds the vertical displacement in channel ``2 * (g * K + k)`` and the
horizontal one in channel ``2 * (g * K + k) + 1`` (K = kernel_h * kernel_w), i.e. (dy, dx) interleaved per kernel
point.  The DCNv2 mask holds the modulation scalar of (g, k) in channel ``g * K + k``.
``tests/modeling/test_deform_conv.py`` proves this against an independent reference implementation.

Precision: torchvision's CPU kernel has no bfloat16 path and its half-precision backward accumulates with atomics,
so low-precision inputs (and any input under ``torch.autocast``) are computed in float32.  Under autocast the
result is returned in the autocast dtype, like ``nn.Conv2d`` would; otherwise in the input's dtype.  The sampling
backend follows the same rule (sample coordinates in bfloat16 would be off by whole pixels).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d as _tv_deform_conv2d

from .deform_sampling import deform_conv2d_sampling as _sampling_deform_conv2d

__all__ = [
    "DeformConv",
    "ModulatedDeformConv",
    "SamplingDeformConv",
    "SamplingModulatedDeformConv",
    "AutoDeformConv",
    "AutoModulatedDeformConv",
    "KERNEL_BACKENDS",
    "kernel_for_device",
    "deform_conv2d",
    "has_detectron2_C",
    "resolve_deform_backend",
    "get_deform_conv_classes",
    "deform_backend_info",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# Values of a module's ``backend`` / of ``deform_conv2d(backend=...)``.
KERNEL_BACKENDS = ("torchvision", "sampling", "auto")


def kernel_for_device(backend: str, device) -> str:
    """The kernel a module with ``backend`` uses for inputs on ``device``: "auto" is torchvision on CUDA (same
    speed as detectron2's compiled kernel there) and "sampling" on every other device (CPU: much faster backward
    than torchvision's CPU kernel)."""
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"deformable conv backend must be one of {KERNEL_BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    return "torchvision" if torch.device(device).type == "cuda" else "sampling"


def _autocast_dtype(device_type: str):
    """The autocast dtype active for ``device_type``, or None when autocast is off there."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # very old torch: only the CUDA query exists
        enabled = device_type == "cuda" and torch.is_autocast_enabled()
    if not enabled:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):
        return torch.get_autocast_gpu_dtype() if device_type == "cuda" else torch.bfloat16


def _check_channels(x, offset, mask, weight, deformable_groups):
    kh, kw = weight.shape[-2:]
    points = kh * kw
    if x.dim() != 4:
        raise RuntimeError(f"deformable conv expects a 4-d NCHW input, got shape {tuple(x.shape)}")
    want = 2 * deformable_groups * points
    if offset.dim() != 4 or offset.shape[1] != want:
        raise RuntimeError(
            f"deformable conv: offset must have 2 * deformable_groups * kh * kw = {want} channels "
            f"(deformable_groups={deformable_groups}, kernel {kh}x{kw}), got shape {tuple(offset.shape)}"
        )
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != deformable_groups * points):
        raise RuntimeError(
            f"modulated deformable conv: mask must have deformable_groups * kh * kw = "
            f"{deformable_groups * points} channels, got shape {tuple(mask.shape)}"
        )
    if x.shape[1] % weight.shape[1] != 0:
        raise RuntimeError(
            f"deformable conv: input has {x.shape[1]} channels, not a multiple of the weight's "
            f"{weight.shape[1]} channels per group"
        )


def deform_conv2d(
    x,
    offset,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    mask=None,
    deformable_groups=1,
    backend="torchvision",
):
    """Functional deformable conv with detectron2's offset/mask layout (see module docstring).

    ``groups`` is implied by ``weight.shape[1]`` (in_channels // groups), as in ``F.conv2d``.
    ``backend``: "torchvision", "sampling" or "auto" (by ``x``'s device, see :func:`kernel_for_device`).
    Handles autocast and low-precision dtypes by computing in float32.
    """
    kernel = kernel_for_device(backend, x.device)
    _check_channels(x, offset, mask, weight, deformable_groups)
    out_dtype = x.dtype
    compute_dtype = x.dtype
    ac_dtype = _autocast_dtype(x.device.type)
    if ac_dtype is not None:
        out_dtype = ac_dtype
        compute_dtype = torch.float32
    elif x.dtype in _LOW_PRECISION:
        compute_dtype = torch.float32
    if not (x.dtype.is_floating_point):
        raise RuntimeError(f"deformable conv needs a floating-point input, got {x.dtype}")

    def cast(t):
        return None if t is None else t.to(compute_dtype)

    # Autocast is switched off so the float32 call is not re-cast by any autocast kernel registration.
    with torch.autocast(device_type=x.device.type, enabled=False):
        if kernel == "sampling":
            out = _sampling_deform_conv2d(
                cast(x),
                cast(offset),
                cast(weight),
                cast(bias),
                _pair(stride),
                _pair(padding),
                _pair(dilation),
                mask=cast(mask),
                deformable_groups=deformable_groups,
            )
        else:
            out = _tv_deform_conv2d(
                cast(x),
                cast(offset),
                cast(weight),
                bias=cast(bias),
                stride=_pair(stride),
                padding=_pair(padding),
                dilation=_pair(dilation),
                mask=cast(mask),
            )
    return out if out.dtype == out_dtype else out.to(out_dtype)


class _DeformConvBase(nn.Module):
    # kernel used when the constructor gets backend=None; the subclasses below override it
    default_backend = "torchvision"

    def _set_backend(self, backend):
        backend = self.default_backend if backend is None else str(backend).lower()
        kernel_for_device(backend, "cpu")  # validates
        self.backend = backend

    def _backend_repr(self):
        return "" if self.backend == "torchvision" else f", backend={self.backend!r}"

    def _finish(self, x):
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class DeformConv(_DeformConvBase):
    """Deformable convolution v1 (Dai et al. 2017) with detectron2's interface.

    Args mirror ``detectron2.layers.DeformConv``; ``bias`` defaults to False (detectron2 forbids it, here it is
    allowed as an extension).  ``forward(x, offset)`` with ``offset`` of ``2 * deformable_groups * kh * kw``
    channels.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
        bias=False,
        norm=None,
        activation=None,
        backend=None,
    ):
        super().__init__()
        self._set_backend(backend)
        if in_channels % groups != 0:
            raise ValueError(f"DeformConv: in_channels {in_channels} is not divisible by groups {groups}")
        if out_channels % groups != 0:
            raise ValueError(f"DeformConv: out_channels {out_channels} is not divisible by groups {groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x, offset):
        out = deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            deformable_groups=self.deformable_groups,
            backend=self.backend,
        )
        return self._finish(out)

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}{self._backend_repr()}"
        )


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable convolution v2 (Zhu et al. 2019) with detectron2's interface.

    ``forward(x, offset, mask)``: ``offset`` has ``2 * deformable_groups * kh * kw`` channels and ``mask``
    ``deformable_groups * kh * kw`` (already passed through a sigmoid by the caller, as in detectron2).
    Like detectron2, stride/padding/dilation are kept as given (``repr`` shows ``stride=1``).
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
        bias=True,
        norm=None,
        activation=None,
        backend=None,
    ):
        super().__init__()
        self._set_backend(backend)
        if in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(
                f"ModulatedDeformConv: channels {in_channels}->{out_channels} not divisible by groups {groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.with_bias = bias
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x, offset, mask):
        out = deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            mask=mask,
            deformable_groups=self.deformable_groups,
            backend=self.backend,
        )
        return self._finish(out)

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.with_bias}{self._backend_repr()}"
        )


class SamplingDeformConv(DeformConv):
    """:class:`DeformConv` on the "sampling" kernel (``MODEL.RESNETS.DEFORM_BACKEND: "sampling"``)."""

    default_backend = "sampling"


class SamplingModulatedDeformConv(ModulatedDeformConv):
    """:class:`ModulatedDeformConv` on the "sampling" kernel."""

    default_backend = "sampling"


class AutoDeformConv(DeformConv):
    """:class:`DeformConv` choosing its kernel per call: torchvision on CUDA, "sampling" elsewhere."""

    default_backend = "auto"


class AutoModulatedDeformConv(ModulatedDeformConv):
    """:class:`ModulatedDeformConv` choosing its kernel per call: torchvision on CUDA, "sampling" elsewhere."""

    default_backend = "auto"


# ----------------------------------------------------------------------------- backend selection
def has_detectron2_C() -> bool:
    """Whether detectron2's compiled extension (and so its deformable-conv kernel) can be imported."""
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


_BACKENDS = ("auto", "torchvision", "sampling", "detectron2")


def resolve_deform_backend(name: str) -> str:
    """Validate MODEL.RESNETS.DEFORM_BACKEND (raises with a clear message) and resolve "auto" as far as it can be
    resolved before the input's device is known: "detectron2" when the compiled ``_C`` is importable, else "auto"
    (the per-call choice, torchvision on CUDA and "sampling" elsewhere).  Other values are returned lower-cased."""
    key = str(name).lower()
    if key not in _BACKENDS:
        raise ValueError(f"MODEL.RESNETS.DEFORM_BACKEND must be one of {_BACKENDS}, got {name!r}")
    if key == "auto":
        return "detectron2" if has_detectron2_C() else "auto"
    if key == "detectron2" and not has_detectron2_C():
        raise RuntimeError(
            "MODEL.RESNETS.DEFORM_BACKEND='detectron2' needs detectron2's compiled extension (detectron2._C), "
            "which cannot be imported in this installation. Use 'auto', 'sampling' or 'torchvision', or build "
            "detectron2 from source with a CUDA toolchain."
        )
    return key


def _detectron2_classes():
    """detectron2's compiled DCN modules, wrapped so that autocast / low precision inputs run in float32
    (detectron2's autograd Functions do not autocast)."""
    from detectron2.layers import DeformConv as D2DeformConv
    from detectron2.layers import ModulatedDeformConv as D2ModulatedDeformConv

    def _call(module, parent_forward, x, *rest):
        ac = _autocast_dtype(x.device.type)
        wdt = module.weight.dtype
        if ac is None and all(t.dtype == wdt for t in (x,) + rest):
            return parent_forward(x, *rest)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = parent_forward(*[t.to(wdt) for t in (x,) + rest])
        return out.to(ac or x.dtype)

    class D2BackedDeformConv(D2DeformConv):
        def forward(self, x, offset):
            return _call(self, super().forward, x, offset)

    class D2BackedModulatedDeformConv(D2ModulatedDeformConv):
        def forward(self, x, offset, mask):
            return _call(self, super().forward, x, offset, mask)

    return D2BackedDeformConv, D2BackedModulatedDeformConv


def get_deform_conv_classes(backend: str = "auto"):
    """(DeformConv class, ModulatedDeformConv class) for a DEFORM_BACKEND value."""
    key = resolve_deform_backend(backend)
    if key == "detectron2":
        return _detectron2_classes()
    if key == "sampling":
        return SamplingDeformConv, SamplingModulatedDeformConv
    if key == "auto":
        return AutoDeformConv, AutoModulatedDeformConv
    return DeformConv, ModulatedDeformConv


def deform_backend_info() -> dict:
    """For collect_env: which kernel DEFORM_BACKEND='auto' uses and what is available."""
    import torchvision

    c_ok = has_detectron2_C()
    key = "detectron2" if c_ok else "auto"
    cpu = "detectron2" if c_ok else kernel_for_device("auto", "cpu")
    cuda = "detectron2" if c_ok else kernel_for_device("auto", "cuda")
    return {
        # what MODEL.RESNETS.DEFORM_BACKEND="auto" uses, in words (collect_env prints this)
        "auto": "detectron2" if c_ok else f"{cpu} on CPU, {cuda} on CUDA (chosen per call by the input's device)",
        "deform_backend_auto": key,  # resolve_deform_backend("auto")
        "auto_cpu": cpu,
        "auto_cuda": cuda,
        "backends": list(_BACKENDS),
        "detectron2_C": c_ok,
        "torchvision": torchvision.__version__,
        "torchvision_deform_conv2d": hasattr(torchvision.ops, "deform_conv2d"),
    }
