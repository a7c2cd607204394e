"""Deformable convolution (DCNv1 / DCNv2) from differentiable PyTorch ops: the "sampling" backend.

Each output location reads the input at ``K = kh * kw`` displaced kernel points.  Here those reads are one
``F.grid_sample`` call per deformable group (bilinear, zero padding), the DCNv2 mask multiplies the samples, and
the convolution itself is a (grouped) matrix product of the weight with the sampled columns.  Autograd provides
the backward pass, which on CPU is several times faster than torchvision's ``deform_conv2d`` backward kernel
(see ``benchmarks/bench_deform_conv.py``).

Why the sampling matches deformable conv exactly.  Deformable conv interpolates bilinearly between the four
integer neighbours of a sample point, a neighbour outside the image contributing zero; a point with ``y <= -1``,
``y >= H``, ``x <= -1`` or ``x >= W`` therefore reads zero, and a point in the one-pixel band around the image
is interpolated partially with zeros.  ``grid_sample(mode="bilinear", padding_mode="zeros")`` computes the same
interpolation.  With ``align_corners=False`` pixel coordinate ``p`` (pixel centres at integers) maps to the
normalised coordinate ``(2 p + 1) / size - 1``, which grid_sample maps back to ``p``; unlike
``align_corners=True`` this is defined for a size of 1 as well.

Layouts are those of ``deform_conv.py``: offset channel ``2 * (g * K + k)`` is dy and ``2 * (g * K + k) + 1``
is dx for deformable group ``g`` and kernel point ``k = i * kw + j``; mask channel ``g * K + k``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["deform_conv2d_sampling"]

# Inputs whose sampled columns (N * C * K * Ho * Wo elements) exceed this many elements are processed in batch
# chunks when no gradient is needed (inference); with autograd the columns are kept for the backward anyway.
_MAX_COLUMN_ELEMENTS = 1 << 27


def _out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _kernel_grid(ho, wo, kh, kw, stride, padding, dilation, h, w, dtype, device):
    """Normalised (x, y) grid of the undisplaced kernel points, shape (K, 2, Ho, Wo), and the per-axis scale
    (2 / W, 2 / H) that maps a pixel displacement to a normalised one."""
    sy, sx = stride
    py, px = padding
    dy, dx = dilation
    ys = (torch.arange(ho, device=device, dtype=dtype) * sy - py).view(1, ho, 1) + (
        torch.arange(kh, device=device, dtype=dtype) * dy
    ).view(kh, 1, 1)  # (kh, Ho, 1)
    xs = (torch.arange(wo, device=device, dtype=dtype) * sx - px).view(1, 1, wo) + (
        torch.arange(kw, device=device, dtype=dtype) * dx
    ).view(kw, 1, 1)  # (kw, 1, Wo)
    gy = (2 * ys + 1) / h - 1
    gx = (2 * xs + 1) / w - 1
    gy = gy.view(kh, 1, ho, 1).expand(kh, kw, ho, wo)
    gx = gx.view(1, kw, 1, wo).expand(kh, kw, ho, wo)
    base = torch.stack([gx, gy], dim=2).reshape(kh * kw, 2, ho, wo)
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=dtype, device=device)
    return base, scale


def _columns(x, offset, mask, base, scale, dgroups):
    """Sampled input, shape (N, C, K, Ho * Wo), optionally multiplied by the mask."""
    n, c, h, w = x.shape
    k, _, ho, wo = base.shape
    cg = c // dgroups
    # (N, G, K, 2, Ho, Wo): channel 0 is dy, channel 1 is dx; grid_sample wants normalised (x, y) last
    off = offset.view(n, dgroups, k, 2, ho, wo)
    gx = torch.addcmul(base[:, 0], off[:, :, :, 1], scale[0])
    gy = torch.addcmul(base[:, 1], off[:, :, :, 0], scale[1])
    grid = torch.stack([gx, gy], dim=-1).view(n * dgroups, k, ho * wo, 2)
    cols = F.grid_sample(
        x.reshape(n * dgroups, cg, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (N * G, Cg, K, Ho * Wo)
    if mask is not None:
        cols = cols * mask.reshape(n * dgroups, 1, k, ho * wo)
    return cols.reshape(n, c, k, ho * wo)


def deform_conv2d_sampling(x, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                           mask=None, deformable_groups=1):
    """Deformable conv via ``grid_sample`` + matmul; same arguments and result as torchvision's
    ``deform_conv2d`` (``stride`` / ``padding`` / ``dilation`` as pairs, ``groups`` implied by the weight).

    Channel counts are expected to be checked by the caller (``deform_conv.deform_conv2d`` does).
    """
    n, c, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups = c // cin_g
    k = kh * kw
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _out_size(w, kw, stride[1], padding[1], dilation[1])
    if ho <= 0 or wo <= 0:
        raise RuntimeError(
            f"deformable conv: input {h}x{w} is too small for kernel {kh}x{kw} with stride {tuple(stride)}, "
            f"padding {tuple(padding)}, dilation {tuple(dilation)}"
        )
    if offset.shape[0] != n or tuple(offset.shape[2:]) != (ho, wo):
        raise RuntimeError(
            f"deformable conv: offset has shape {tuple(offset.shape)}, expected batch {n} and spatial size "
            f"{ho}x{wo} (the output size)"
        )
    if mask is not None and (mask.shape[0] != n or tuple(mask.shape[2:]) != (ho, wo)):
        raise RuntimeError(
            f"modulated deformable conv: mask has shape {tuple(mask.shape)}, expected batch {n} and spatial "
            f"size {ho}x{wo} (the output size)"
        )
    base, scale = _kernel_grid(ho, wo, kh, kw, stride, padding, dilation, h, w, x.dtype, x.device)
    w_mat = weight.reshape(groups, cout // groups, cin_g * k)

    def run(xb, ob, mb):
        cols = _columns(xb, ob, mb, base, scale, deformable_groups)
        nb = xb.shape[0]
        # batched GEMM with the weight broadcast over the batch (no copy of the columns in either pass)
        wb = w_mat.unsqueeze(0).expand(nb, groups, cout // groups, cin_g * k)
        wb = wb.reshape(nb * groups, cout // groups, cin_g * k)
        out = torch.bmm(wb, cols.reshape(nb * groups, cin_g * k, ho * wo))
        return out.view(nb, cout, ho, wo)

    per_sample = c * k * ho * wo
    chunk = n
    if not torch.is_grad_enabled() or not any(
        t is not None and t.requires_grad for t in (x, offset, mask, weight)
    ):
        chunk = max(1, min(n, _MAX_COLUMN_ELEMENTS // max(per_sample, 1)))
    if chunk >= n:
        out = run(x, offset, mask)
    else:
        out = torch.cat(
            [
                run(x[s : s + chunk], offset[s : s + chunk], None if mask is None else mask[s : s + chunk])
                for s in range(0, n, chunk)
            ]
        )
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
