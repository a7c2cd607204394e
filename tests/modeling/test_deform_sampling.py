"""The "sampling" deformable-conv backend (grid_sample + matmul) against torchvision's deform_conv2d kernel,
its boundary semantics, gradcheck, and the DEFORM_BACKEND wiring ("sampling", per-device "auto")."""
import itertools

import pytest
import torch
from detectron2 import model_zoo
from detectron2.modeling import build_backbone
from torchvision.ops import deform_conv2d as tv_deform_conv2d

import cardd_d2
from cardd_d2.modeling.layers import deform_conv as dc
from cardd_d2.modeling.layers import deform_sampling
from cardd_d2.modeling.layers.deform_conv import (
    DeformConv,
    ModulatedDeformConv,
    deform_conv2d,
    has_detectron2_C,
    kernel_for,
)

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def _case(dtype, modulated, groups, dgroups, stride, dilation, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, cin, cout, h, w = 2, 4, 6, 7, 5  # non-square
    pad = dilation
    ho = (h + 2 * pad - 2 * dilation - 1) // stride + 1
    wo = (w + 2 * pad - 2 * dilation - 1) // stride + 1
    x = torch.randn(n, cin, h, w, generator=g, dtype=dtype)
    # offsets of a few pixels: many samples land partly or fully outside the image
    offset = torch.randn(n, 2 * dgroups * 9, ho, wo, generator=g, dtype=dtype) * 2.5
    mask = torch.rand(n, dgroups * 9, ho, wo, generator=g, dtype=dtype) if modulated else None
    weight = torch.randn(cout, cin // groups, 3, 3, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    kw = dict(stride=(stride, stride), padding=(pad, pad), dilation=(dilation, dilation))
    return x, offset, mask, weight, bias, kw


def _outputs_and_grads(fn, x, offset, mask, weight, bias, grad_out=None):
    leaves = [t.detach().clone().requires_grad_() for t in (x, offset, weight, bias)]
    m = None if mask is None else mask.detach().clone().requires_grad_()
    out = fn(leaves[0], leaves[1], leaves[2], leaves[3], m)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    out.backward(grad_out)
    grads = [t.grad for t in leaves] + ([] if m is None else [m.grad])
    return out, grads, grad_out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("groups,dgroups", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_matches_torchvision_forward_and_gradients(dtype, modulated, groups, dgroups):
    for stride, dilation in itertools.product((1, 2), (1, 2)):
        x, offset, mask, weight, bias, kw = _case(dtype, modulated, groups, dgroups, stride, dilation)

        def tv(a, o, wt, b, mk):
            return tv_deform_conv2d(a, o, wt, b, mask=mk, **kw)

        def ours(a, o, wt, b, mk):
            return deform_conv2d(a, o, wt, b, mask=mk, deformable_groups=dgroups, backend="sampling", **kw)

        ref, ref_grads, go = _outputs_and_grads(tv, x, offset, mask, weight, bias)
        out, grads, _ = _outputs_and_grads(ours, x, offset, mask, weight, bias, go)
        assert out.dtype == dtype
        torch.testing.assert_close(out, ref, **TOL[dtype])
        names = ["input", "offset", "weight", "bias", "mask"]
        for name, got, want in zip(names, grads, ref_grads):
            # offset gradients are sums of 4-neighbour differences times large weights: scale the tolerance
            scale = max(1.0, want.abs().max().item())
            tol = {k: v * scale for k, v in TOL[dtype].items()}
            torch.testing.assert_close(got, want, **tol, msg=lambda m, n=name, s=(stride, dilation): f"{n} {s}: {m}")


# Sample coordinates around the image border (H=3 rows, W=4 columns): DCN reads zero at y <= -1 or y >= H (and
# likewise for x) and interpolates with zeros in the one-pixel band around the image.
_YS = [-1.5, -1.0, -0.75, -0.5, 0.0, 0.25, 1.5, 2.0, 2.5, 2.999, 3.0, 3.2]
_XS = [-1.0, -0.3, 0.0, 3.0, 3.5, 4.0, 4.6, 1.25]


def _zero_padded_bilinear(img, y, x):
    h, w = img.shape
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    acc = 0.0
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        if 0 <= yy < h and 0 <= xx < w:
            acc += (1 - abs(y - yy)) * (1 - abs(x - xx)) * img[yy, xx].item()
    return acc


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_samples(dtype):
    """1x1 kernel, one output location per (y, x) pair: out = value sampled at (y, x)."""
    h, w = 3, 4
    img = torch.arange(1, h * w + 1, dtype=dtype).reshape(h, w) ** 1.5
    pts = list(itertools.product(_YS, _XS))
    # the output grid is h x w; put every test point at output location 0 of its own batch element
    n = len(pts)
    x = img.expand(n, 1, h, w).contiguous()
    offset = torch.zeros(n, 2, h, w, dtype=dtype)
    for i, (y, xx) in enumerate(pts):
        offset[i, 0, 0, 0], offset[i, 1, 0, 0] = y, xx  # location (0, 0): sample = offset itself
    weight = torch.ones(1, 1, 1, 1, dtype=dtype)
    ours = deform_conv2d(x, offset, weight, backend="sampling")
    ref = tv_deform_conv2d(x, offset, weight)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    # grid_sample's normalised coordinates round-trip through (2p + 1) / size - 1, so "exactly on the border" is
    # exact only up to float rounding: a point at y = -1 may get a weight of ~1e-7 (float32) on row 0
    eps = 1e-6 if dtype == torch.float32 else 1e-13
    peak = img.abs().max().item()
    for i, (y, xx) in enumerate(pts):
        want = _zero_padded_bilinear(img, y, xx)
        assert ours[i, 0, 0, 0].item() == pytest.approx(want, abs=eps * peak), (y, xx)
        if y <= -1 or y >= h or xx <= -1 or xx >= w:
            assert abs(ours[i, 0, 0, 0].item()) <= eps * peak, (y, xx)
        if y < -1 or y > h or xx < -1 or xx > w:
            assert ours[i, 0, 0, 0].item() == 0.0, (y, xx)  # beyond the one-pixel band: exactly zero
    assert ours[_YS.index(-0.5) * len(_XS) + _XS.index(0.0), 0, 0, 0].item() == pytest.approx(0.5 * img[0, 0].item())


def test_boundary_offset_gradients():
    """Where bilinear interpolation is differentiable (off the integer grid lines), offset gradients in the border
    band and outside the image agree with torchvision's kernel; fully outside they are zero."""
    h, w = 3, 4
    ys = [-1.4, -0.6, -0.2, 0.3, 2.4, 2.7, 3.3]
    xs = [-1.2, -0.5, 3.6, 1.5, 4.4]
    pts = list(itertools.product(ys, xs))
    n = len(pts)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, h, w, generator=g, dtype=torch.float64)
    offset = torch.randn(n, 2, h, w, generator=g, dtype=torch.float64) * 0.3
    for i, (y, xx) in enumerate(pts):
        offset[i, 0, 0, 0], offset[i, 1, 0, 0] = y, xx
    weight = torch.randn(3, 2, 1, 1, generator=g, dtype=torch.float64)
    mask = torch.rand(n, 1, h, w, generator=g, dtype=torch.float64)

    ref, ref_grads, go = _outputs_and_grads(
        lambda a, o, wt, b, mk: tv_deform_conv2d(a, o, wt, b, mask=mk), x, offset, mask, weight, torch.zeros(3)
    )
    out, grads, _ = _outputs_and_grads(
        lambda a, o, wt, b, mk: deform_conv2d(a, o, wt, b, mask=mk, backend="sampling"),
        x, offset, mask, weight, torch.zeros(3), go,
    )
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL[torch.float64])
    off_grad = grads[1]
    for i, (y, xx) in enumerate(pts):
        outside = y <= -1 or y >= h or xx <= -1 or xx >= w
        assert (off_grad[i, :, 0, 0].abs().sum().item() == 0.0) == outside, (y, xx)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradcheck_float64(modulated):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # fractional offsets (away from integer grid lines, where bilinear sampling has kinks), some outside
    frac = torch.rand(1, 36, 2, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    shift = torch.randint(-2, 3, (1, 36, 2, 2), generator=g).to(torch.float64)
    offset = (frac + shift).requires_grad_()
    weight = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 18, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(a, o, wt, b, *mk):
        return deform_conv2d(
            a, o, wt, b, stride=2, padding=1, dilation=1, mask=mk[0] if mk else None, deformable_groups=2,
            backend="sampling",
        )

    inputs = (x, offset, weight, bias) + ((mask,) if modulated else ())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


def test_module_classes_share_parameters_and_state_dict():
    torch.manual_seed(0)
    pairs = [
        (DeformConv(4, 6, 3, padding=1, groups=2, deformable_groups=2), DeformConv, ()),
        (ModulatedDeformConv(4, 6, 3, stride=2, padding=1, deformable_groups=2), ModulatedDeformConv, (1,)),
    ]
    x = torch.randn(2, 4, 6, 5)
    for ref_mod, cls, has_mask in pairs:
        ours = cls(4, 6, 3, stride=ref_mod.stride, padding=ref_mod.padding, groups=ref_mod.groups,
                   deformable_groups=2, bias=ref_mod.bias is not None, backend="sampling")
        assert isinstance(ours, type(ref_mod)) and ours.backend == "sampling"
        assert list(ours.state_dict()) == list(ref_mod.state_dict())
        ours.load_state_dict(ref_mod.state_dict())
        ho, wo = (6, 5) if ref_mod.stride in (1, (1, 1)) else (3, 3)
        off = torch.randn(2, 36, ho, wo) * 2
        extra = (torch.rand(2, 18, ho, wo),) if has_mask else ()
        torch.testing.assert_close(ours(x, off, *extra), ref_mod(x, off, *extra), atol=1e-5, rtol=1e-5)
        assert "backend='sampling'" in repr(ours)
    # the plain modules take the kernel as a constructor argument too, and validate it
    assert DeformConv(1, 1, 3, backend="auto").backend == "auto"
    with pytest.raises(ValueError, match="backend"):
        DeformConv(1, 1, 3, backend="cudnn")


def test_auto_picks_kernel_by_input_device(monkeypatch):
    assert kernel_for("auto", "cpu") == "sampling"
    assert kernel_for("auto", torch.device("cuda", 0)) == ("detectron2" if has_detectron2_C() else "torchvision")
    assert kernel_for("torchvision", "cpu") == "torchvision"
    calls = []

    def spy(name, fn):
        def wrapped(*a, **k):
            calls.append(name)
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(dc, "_sampling_deform_conv2d", spy("sampling", dc._sampling_deform_conv2d))
    monkeypatch.setattr(dc, "_tv_deform_conv2d", spy("torchvision", dc._tv_deform_conv2d))
    x = torch.randn(1, 2, 5, 5)
    off = torch.randn(1, 18, 5, 5)
    DeformConv(2, 2, 3, padding=1, backend="auto")(x, off)
    ModulatedDeformConv(2, 2, 3, padding=1, backend="auto")(x, off, torch.rand(1, 9, 5, 5))
    DeformConv(2, 2, 3, padding=1)(x, off)
    assert calls == ["sampling", "sampling", "torchvision"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_auto_on_cuda_uses_torchvision_and_matches_sampling(monkeypatch):
    calls = []
    real = dc._tv_deform_conv2d
    monkeypatch.setattr(dc, "_tv_deform_conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    m = ModulatedDeformConv(4, 4, 3, padding=1, deformable_groups=2, backend="auto")
    x, off, mask = torch.randn(2, 4, 9, 7), torch.randn(2, 36, 9, 7) * 2, torch.rand(2, 18, 9, 7)
    cpu_out = m(x, off, mask)
    m = m.cuda()
    out = m(x.cuda(), off.cuda(), mask.cuda())
    assert calls == [1]
    torch.testing.assert_close(out.cpu(), cpu_out, atol=1e-4, rtol=1e-4)
    m.backend = "sampling"
    torch.testing.assert_close(m(x.cuda(), off.cuda(), mask.cuda()).cpu(), cpu_out, atol=1e-4, rtol=1e-4)


def test_low_precision_autocast_and_empty_batch():
    torch.manual_seed(0)
    m = ModulatedDeformConv(2, 4, 3, padding=1, backend="sampling")
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    off, mask = torch.randn(1, 18, 5, 5), torch.rand(1, 9, 5, 5)
    ref = m(x, off, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x, off, mask)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.02)
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(m.weight.grad).all()
    half = DeformConv(2, 4, 3, padding=1, backend="sampling").to(torch.float16)
    xh = x.detach().half().requires_grad_()
    out = half(xh, off.half())
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert xh.grad.dtype == torch.float16
    e = DeformConv(2, 4, 3, stride=2, padding=1, backend="sampling")
    empty = e(torch.rand(0, 2, 7, 7), torch.rand(0, 18, 4, 4))
    assert empty.shape == (0, 4, 4, 4)


def test_batch_chunking_without_grad(monkeypatch):
    x, offset, mask, weight, bias, kw = _case(torch.float32, True, 2, 2, 1, 1)
    x = torch.cat([x, x.flip(0), x * 2])
    offset = torch.cat([offset, offset.flip(0), -offset])
    mask = torch.cat([mask] * 3)
    with torch.no_grad():
        whole = deform_sampling.deform_conv2d_sampling(x, offset, weight, bias, mask=mask, deformable_groups=2,
                                                       **kw)
        monkeypatch.setattr(deform_sampling, "_MAX_COLUMN_ELEMENTS", 4 * 9 * 7 * 5 * 2)  # two samples a chunk
        chunked = deform_sampling.deform_conv2d_sampling(x, offset, weight, bias, mask=mask, deformable_groups=2,
                                                         **kw)
    torch.testing.assert_close(chunked, whole, atol=0, rtol=0)


def test_bad_offset_size_raises():
    m = DeformConv(2, 2, 3, padding=1, backend="sampling")
    with pytest.raises(RuntimeError, match="offset"):
        m(torch.rand(1, 2, 5, 5), torch.rand(1, 18, 4, 5))
    with pytest.raises(RuntimeError, match="mask"):
        ModulatedDeformConv(2, 2, 3, padding=1, backend="sampling")(
            torch.rand(1, 2, 5, 5), torch.rand(1, 18, 5, 5), torch.rand(2, 9, 5, 5)
        )


def _backbone_cfg(backend):
    cfg = cardd_d2.get_cardd_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_cardd_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = True
    cfg.MODEL.RESNETS.DEFORM_BACKEND = backend
    return cfg


def test_config_backend_sampling_equals_torchvision_backbone():
    torch.manual_seed(0)
    tv_bb = build_backbone(_backbone_cfg("torchvision")).eval()
    sp_bb = build_backbone(_backbone_cfg("SAMPLING")).eval()
    block = list(sp_bb.bottom_up.res5.children())[0]
    assert type(block.conv2) is ModulatedDeformConv and block.conv2.backend == "sampling"
    assert list(sp_bb.state_dict()) == list(tv_bb.state_dict())
    # non-zero offsets so the deformable path matters
    for b in tv_bb.bottom_up.res5.children():
        torch.nn.init.normal_(b.conv2_offset.weight, std=0.01)
    sp_bb.load_state_dict(tv_bb.state_dict())
    x = torch.randn(1, 3, 64, 96)
    a, b = tv_bb(x), sp_bb(x)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-4)
