"""Deformable convolution (DCNv1 / DCNv2) with detectron2's interface on a choice of kernels.

:class:`DeformConv` and :class:`ModulatedDeformConv` are drop-in replacements for ``detectron2.layers.DeformConv`` /
``ModulatedDeformConv``: same constructor arguments, parameter names (``weight``, ``bias``, ``norm.*``) and
``forward(x, offset)`` / ``forward(x, offset, mask)`` signatures. Both store stride, padding and dilation as pairs.
They work without detectron2's compiled ``_C``, on CPU and CUDA, forward and backward.

The kernel is a plain attribute of each module (``backend``, not in its state dict, so checkpoints load with any
value); the same names are the values of ``MODEL.RESNETS.DEFORM_BACKEND``:

* ``"torchvision"``: ``torchvision.ops.deform_conv2d``;
* ``"sampling"``: ``F.grid_sample`` at the displaced kernel points + a matrix product with the weight, backward by
  autograd (``deform_sampling.py``). Same results as torchvision's kernel to float rounding; on CPU its training
  step is several times faster than torchvision's, whose CPU backward is slow;
* ``"detectron2"``: detectron2's compiled kernel (needs ``detectron2._C``);
* ``"auto"``: chosen at every call by :func:`kernel_for` from the input's device (CUDA: detectron2's kernel if
  compiled, else torchvision; elsewhere "sampling"), so a model moved to the GPU switches kernel with it.

Offset layout (identical in detectron2, mmcv and torchvision): for deformable group ``g`` and kernel point
``k = i * kernel_w + j`` the offset tensor holds the vertical displacement in channel ``2 * (g * K + k)`` and the
horizontal one in channel ``2 * (g * K + k) + 1`` (K = kernel_h * kernel_w), i.e. (dy, dx) interleaved per kernel
point. The DCNv2 mask holds the modulation scalar of (g, k) in channel ``g * K + k``.
``tests/modeling/test_deform_conv.py`` proves this against an independent reference implementation.

Precision: torchvision's CPU kernel has no bfloat16 path and its half-precision backward accumulates with atomics,
and detectron2's autograd Functions do not autocast, so low-precision inputs (and any input under
``torch.autocast``) are computed in float32. Under autocast the result is returned in the autocast dtype, like
``nn.Conv2d`` would; otherwise in the input's dtype. The sampling kernel follows the same rule (sample coordinates in
bfloat16 would be off by whole pixels).
"""
from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d as _tv_deform_conv2d

from .deform_sampling import deform_conv2d_sampling as _sampling_deform_conv2d

__all__ = [
    "DEFORM_BACKENDS",
    "DeformConv",
    "ModulatedDeformConv",
    "build_deform_conv",
    "check_deform_backend",
    "deform_backend_info",
    "deform_conv2d",
    "has_detectron2_C",
    "kernel_for",
]

# Values of MODEL.RESNETS.DEFORM_BACKEND and of a module's ``backend``.
DEFORM_BACKENDS = ("auto", "torchvision", "sampling", "detectron2")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=None)
def has_detectron2_C() -> bool:
    """Whether detectron2's compiled extension (and so its deformable-conv kernel) can be imported."""
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def check_deform_backend(name: str) -> str:
    """``name`` lower-cased if it is a usable backend; a clear error otherwise."""
    key = str(name).lower()
    if key not in DEFORM_BACKENDS:
        raise ValueError(f"MODEL.RESNETS.DEFORM_BACKEND (deformable conv backend) must be one of {DEFORM_BACKENDS}, "
                         f"got {name!r}")
    if key == "detectron2" and not has_detectron2_C():
        raise RuntimeError(
            "MODEL.RESNETS.DEFORM_BACKEND='detectron2' needs detectron2's compiled extension (detectron2._C), "
            "which cannot be imported in this installation. Use 'auto', 'sampling' or 'torchvision', or build "
            "detectron2 from source with a CUDA toolchain."
        )
    return key


def kernel_for(backend: str, device) -> str:
    """The kernel a module with ``backend`` runs for inputs on ``device``; the one place "auto" is resolved: on CUDA
    detectron2's compiled kernel when ``_C`` is importable, else torchvision's (as fast there); on every other
    device "sampling" (on CPU its backward is much faster than torchvision's, and detectron2's kernel has no CPU
    DCNv2)."""
    backend = check_deform_backend(backend)
    if backend != "auto":
        return backend
    if torch.device(device).type != "cuda":
        return "sampling"
    return "detectron2" if has_detectron2_C() else "torchvision"


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


def _detectron2_kernel(x, offset, weight, bias, stride, padding, dilation, mask, deformable_groups):
    from detectron2.layers.deform_conv import deform_conv, modulated_deform_conv

    groups = x.shape[1] // weight.shape[1]
    if mask is not None:
        # detectron2's modulated kernel takes scalar geometry
        if any(a != b for a, b in (stride, padding, dilation)):
            raise ValueError("the detectron2 modulated deformable conv kernel needs square stride/padding/dilation, "
                             f"got {stride}, {padding}, {dilation}")
        return modulated_deform_conv(x, offset, mask, weight, bias, stride[0], padding[0], dilation[0], groups,
                                     deformable_groups)
    out = deform_conv(x, offset, weight, stride, padding, dilation, groups, deformable_groups)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


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

    ``groups`` is implied by ``weight.shape[1]`` (in_channels // groups), as in ``F.conv2d``. ``backend``: one of
    ``DEFORM_BACKENDS`` ("auto": by ``x``'s device, see :func:`kernel_for`). Autocast and low-precision dtypes are
    computed in float32.
    """
    kernel = kernel_for(backend, x.device)
    _check_channels(x, offset, mask, weight, deformable_groups)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"deformable conv needs a floating-point input, got {x.dtype}")
    out_dtype = compute_dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        out_dtype, compute_dtype = torch.get_autocast_dtype(x.device.type), torch.float32
    elif x.dtype in _LOW_PRECISION:
        compute_dtype = torch.float32

    def cast(t):
        return None if t is None else t.to(compute_dtype)

    args = (cast(x), cast(offset), cast(weight), cast(bias), _pair(stride), _pair(padding), _pair(dilation))
    # Autocast is switched off so the float32 call is not re-cast by any autocast kernel registration.
    with torch.autocast(device_type=x.device.type, enabled=False):
        if kernel == "sampling":
            out = _sampling_deform_conv2d(*args, mask=cast(mask), deformable_groups=deformable_groups)
        elif kernel == "detectron2":
            out = _detectron2_kernel(*args, mask=cast(mask), deformable_groups=deformable_groups)
        else:
            xc, oc, wc, bc, st, pad, dil = args
            out = _tv_deform_conv2d(xc, oc, wc, bias=bc, stride=st, padding=pad, dilation=dil, mask=cast(mask))
    return out if out.dtype == out_dtype else out.to(out_dtype)


class _DeformConvBase(nn.Module):
    """Construction shared by both modules; ``bias`` defaults as in detectron2 (DCNv1 none, DCNv2 one)."""

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
        bias=None,
        norm=None,
        activation=None,
        backend="torchvision",
    ):
        super().__init__()
        if in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(
                f"{type(self).__name__}: channels {in_channels}->{out_channels} not divisible by groups {groups}"
            )
        self.backend = check_deform_backend(backend)
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
        if bias is None:
            bias = self.default_bias
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _conv(self, x, offset, mask=None):
        out = deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask=mask,
                            deformable_groups=self.deformable_groups, backend=self.backend)
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
            + ("" if self.backend == "torchvision" else f", backend={self.backend!r}")
        )


class DeformConv(_DeformConvBase):
    """Deformable convolution v1 (Dai et al. 2017): ``forward(x, offset)`` with ``offset`` of
    ``2 * deformable_groups * kh * kw`` channels. ``bias`` defaults to False (detectron2 forbids it; allowed here)."""

    default_bias = False

    def forward(self, x, offset):
        return self._conv(x, offset)


class ModulatedDeformConv(_DeformConvBase):
    """Modulated deformable convolution v2 (Zhu et al. 2019): ``forward(x, offset, mask)``; ``mask`` has
    ``deformable_groups * kh * kw`` channels, already passed through a sigmoid by the caller (as in detectron2)."""

    default_bias = True

    def forward(self, x, offset, mask):
        return self._conv(x, offset, mask)


def build_deform_conv(in_channels, out_channels, *, modulated: bool, backend: str = "auto", **kwargs):
    """The deformable conv module for ``MODEL.RESNETS.DEFORM_MODULATED`` / ``DEFORM_BACKEND``; kwargs as the
    modules' constructor."""
    cls = ModulatedDeformConv if modulated else DeformConv
    return cls(in_channels, out_channels, backend=backend, **kwargs)


def deform_backend_info() -> dict:
    """For collect_env: which kernels ``DEFORM_BACKEND='auto'`` uses and what is available."""
    import torchvision

    cpu, cuda = kernel_for("auto", "cpu"), kernel_for("auto", "cuda")
    return {
        "auto": cpu if cpu == cuda else f"{cpu} on CPU, {cuda} on CUDA (chosen per call by the input's device)",
        "auto_cpu": cpu,
        "auto_cuda": cuda,
        "backends": list(DEFORM_BACKENDS),
        "detectron2_C": has_detectron2_C(),
        "torchvision": torchvision.__version__,
    }
