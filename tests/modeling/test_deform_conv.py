"""Deformable conv on torchvision: detectron2 golden values, layout proof, gradcheck, dtypes, autocast."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from cardd_d2.modeling.layers.deform_conv import (
    DeformConv,
    ModulatedDeformConv,
    build_deform_conv,
    check_deform_backend,
    deform_backend_info,
    has_detectron2_C,
    kernel_for,
)

# detectron2 tests/layers/test_deformable.py: 1x1x5x5 arange input, all offsets 0.5, 3x3 all-ones weight, pad 1.
D2_GOLDEN = torch.tensor(
    [
        [30, 41.25, 48.75, 45, 28.75],
        [62.25, 81, 90, 80.25, 50.25],
        [99.75, 126, 135, 117.75, 72.75],
        [105, 131.25, 138.75, 120, 73.75],
        [71.75, 89.25, 93.75, 80.75, 49.5],
    ]
)


def _golden_inputs():
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    offset = torch.full((1, 18, 5, 5), 0.5)
    return x, offset


def test_detectron2_golden_dcnv1():
    x, offset = _golden_inputs()
    m = DeformConv(1, 1, kernel_size=3, padding=1)
    with torch.no_grad():
        m.weight.fill_(1.0)
    out = m(x, offset)
    assert out.shape == (1, 1, 5, 5)
    torch.testing.assert_close(out[0, 0], D2_GOLDEN)


def test_detectron2_golden_dcnv2_half_mask():
    x, offset = _golden_inputs()
    m = ModulatedDeformConv(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    out = m(x, offset, torch.full((1, 9, 5, 5), 0.5))
    torch.testing.assert_close(out[0, 0], D2_GOLDEN * 0.5)


def test_repr_like_detectron2_with_pairs():
    assert repr(DeformConv(3, 10, kernel_size=3, padding=1, deformable_groups=2)) == (
        "DeformConv(in_channels=3, out_channels=10, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
        "dilation=(1, 1), groups=1, deformable_groups=2, bias=False)"
    )
    assert repr(ModulatedDeformConv(3, 10, kernel_size=3, padding=1, deformable_groups=2)) == (
        "ModulatedDeformConv(in_channels=3, out_channels=10, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), "
        "dilation=(1, 1), groups=1, deformable_groups=2, bias=True)"
    )


def test_wrong_offset_or_mask_channels_raise():
    x = torch.rand(1, 1, 3, 3)
    with pytest.raises(RuntimeError, match="offset"):
        DeformConv(1, 1, 3, padding=1)(x, torch.zeros(1, 9, 3, 3))
    # 18 channels would silently mean 1 deformable group in torchvision; the module knows it has 2
    with pytest.raises(RuntimeError, match="offset"):
        DeformConv(2, 2, 3, padding=1, deformable_groups=2)(torch.rand(1, 2, 3, 3), torch.zeros(1, 18, 3, 3))
    with pytest.raises(RuntimeError, match="mask"):
        ModulatedDeformConv(1, 1, 3, padding=1)(x, torch.zeros(1, 18, 3, 3), torch.ones(1, 18, 3, 3))


def test_small_input_and_empty_batch():
    for k in (3, 5):
        x = torch.rand(1, 1, k - 1, k - 1)
        off = torch.randn(1, 2 * k * k, k - 1, k - 1)
        assert DeformConv(1, 1, k, padding=k // 2)(x, off).shape == x.shape
        out = ModulatedDeformConv(1, 1, k, padding=k // 2)(x, off, torch.ones(1, k * k, k - 1, k - 1))
        assert out.shape == x.shape
    m = DeformConv(2, 4, 3, stride=2, padding=1)
    assert m(torch.rand(0, 2, 7, 7), torch.rand(0, 18, 4, 4)).shape == (0, 4, 4, 4)


def _bilinear(img, y, x):
    """img (C,H,W) float64; zero outside; returns (C,)."""
    c, h, w = img.shape
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    acc = torch.zeros(c, dtype=img.dtype)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        if 0 <= yy < h and 0 <= xx < w:
            acc += (1 - abs(y - yy)) * (1 - abs(x - xx)) * img[:, yy, xx]
    return acc


def _reference(x, offset, weight, stride, pad, dil, groups, dgroups, mask=None):
    """Independent, loop-based deformable conv written from the papers' definition with the layout stated in
    deform_conv.py: offset channel 2*(g*K+k) = dy, 2*(g*K+k)+1 = dx; mask channel g*K+k."""
    n, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    K = kh * kw
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    cpg = cin // dgroups  # channels per deformable group
    out = torch.zeros(n, cout, ho, wo, dtype=x.dtype)
    for b, oy, ox in itertools.product(range(n), range(ho), range(wo)):
        cols = torch.zeros(cin, K, dtype=x.dtype)  # sampled values
        for g in range(dgroups):
            for i, j in itertools.product(range(kh), range(kw)):
                k = i * kw + j
                dy = offset[b, 2 * (g * K + k), oy, ox].item()
                dx = offset[b, 2 * (g * K + k) + 1, oy, ox].item()
                py = oy * stride - pad + i * dil + dy
                px = ox * stride - pad + j * dil + dx
                v = _bilinear(x[b, g * cpg : (g + 1) * cpg], py, px)
                if mask is not None:
                    v = v * mask[b, g * K + k, oy, ox]
                cols[g * cpg : (g + 1) * cpg, k] = v
        for co in range(cout):
            grp = co // (cout // groups)
            patch = cols[grp * cin_g : (grp + 1) * cin_g]
            out[b, co, oy, ox] = (patch * weight[co].reshape(cin_g, K)).sum()
    return out


@pytest.mark.parametrize("modulated", [False, True])
def test_matches_reference_layout_with_groups(modulated):
    torch.manual_seed(0)
    cin, cout, groups, dgroups = 4, 4, 2, 2
    cls = ModulatedDeformConv if modulated else DeformConv
    m = cls(cin, cout, 3, stride=2, padding=2, dilation=2, groups=groups, deformable_groups=dgroups, bias=False).double()
    x = torch.randn(1, cin, 6, 5, dtype=torch.float64)
    ho, wo = 3, 3
    offset = torch.randn(1, 2 * dgroups * 9, ho, wo, dtype=torch.float64) * 1.5
    mask = torch.rand(1, dgroups * 9, ho, wo, dtype=torch.float64) if modulated else None
    out = m(x, offset, mask) if modulated else m(x, offset)
    ref = _reference(x, offset, m.weight.detach(), 2, 2, 2, groups, dgroups, mask)
    torch.testing.assert_close(out, ref)


def test_integer_dy_shift_equals_shifted_conv():
    """(dy, dx) order: an offset of +1 in the even (dy) channels samples one row further down."""
    torch.manual_seed(0)
    m = DeformConv(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 6, 6)
    offset = torch.zeros(1, 18, 6, 6)
    offset[:, 0::2] = 1.0  # dy
    out = m(x, offset)
    shifted = F.pad(x[:, :, 1:], (0, 0, 0, 1))  # row r of shifted = row r+1 of x
    # row 0 differs legitimately: its top taps sample x's row 0 instead of the zero padding
    torch.testing.assert_close(out[:, :, 1:], F.conv2d(shifted, m.weight, padding=1)[:, :, 1:])
    assert not torch.allclose(out[:, :, 1:], F.conv2d(x, m.weight, padding=1)[:, :, 1:])
    offset = torch.zeros(1, 18, 6, 6)
    offset[:, 1::2] = -1.0  # dx: one column to the left
    shifted = F.pad(x[:, :, :, :-1], (1, 0, 0, 0))
    torch.testing.assert_close(m(x, offset)[..., :-1], F.conv2d(shifted, m.weight, padding=1)[..., :-1])


def test_zero_offset_equals_conv():
    torch.manual_seed(0)
    m = ModulatedDeformConv(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(2, 4, 9, 7)
    out = m(x, torch.zeros(2, 18, 5, 4), torch.ones(2, 9, 5, 4))
    torch.testing.assert_close(out, F.conv2d(x, m.weight, m.bias, stride=2, padding=1, groups=2))


@pytest.mark.parametrize("modulated", [False, True])
def test_gradcheck_float64(modulated):
    torch.manual_seed(0)
    cls = ModulatedDeformConv if modulated else DeformConv
    m = cls(2, 2, 3, padding=1, stride=2, deformable_groups=2, bias=modulated).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    # keep sample points away from integer grid lines where bilinear interpolation is not differentiable
    offset = (torch.rand(1, 36, 2, 2, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    w = m.weight
    if modulated:
        mask = torch.rand(1, 18, 2, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, o, mk, ww: m(a, o, mk), (x, offset, mask, w), eps=1e-6, atol=1e-5)
    else:
        assert torch.autograd.gradcheck(lambda a, o, ww: m(a, o), (x, offset, w), eps=1e-6, atol=1e-5)


def test_norm_activation_and_low_precision_inputs():
    torch.manual_seed(0)
    m = DeformConv(2, 4, 3, padding=1, norm=torch.nn.GroupNorm(2, 4), activation=torch.relu)
    x = torch.randn(1, 2, 5, 5)
    off = torch.randn(1, 18, 5, 5)
    ref = m(x, off)
    assert (ref >= 0).all()
    for dt in (torch.bfloat16, torch.float16):
        mm = DeformConv(2, 4, 3, padding=1).to(dt)
        with torch.no_grad():
            mm.weight.copy_(m.weight.to(dt))
        xx = x.to(dt).requires_grad_()
        y = mm(xx, off.to(dt))
        assert y.dtype == dt
        y.float().sum().backward()
        assert xx.grad is not None and xx.grad.dtype == dt


def test_cpu_bf16_autocast_forward_backward():
    torch.manual_seed(0)
    m = ModulatedDeformConv(2, 4, 3, padding=1)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    off = torch.randn(1, 18, 5, 5)
    mask = torch.rand(1, 9, 5, 5)
    ref = m(x, off, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x, off, mask)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.02)
    y.float().sum().backward()
    assert x.grad is not None and m.weight.grad is not None and torch.isfinite(m.weight.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_fp16_autocast_matches_fp32():
    torch.manual_seed(0)
    m = DeformConv(4, 4, 3, padding=1).cuda()
    x = torch.randn(2, 4, 8, 8, device="cuda")
    off = torch.randn(2, 18, 8, 8, device="cuda")
    ref = m(x, off)
    with torch.autocast("cuda", dtype=torch.float16):
        y = m(x, off)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), ref, atol=0.02, rtol=0.01)


def test_backend_resolution():
    info = deform_backend_info()
    assert info["detectron2_C"] == has_detectron2_C()
    assert info["backends"] == ["auto", "torchvision", "sampling", "detectron2"]
    assert type(build_deform_conv(2, 2, modulated=False, kernel_size=3, backend="torchvision")) is DeformConv
    assert type(build_deform_conv(2, 2, modulated=True, kernel_size=3, backend="sampling")) is ModulatedDeformConv
    assert check_deform_backend("SAMPLING") == "sampling"
    with pytest.raises(ValueError, match="DEFORM_BACKEND"):
        check_deform_backend("cuda")
    assert (info["auto_cpu"], kernel_for("auto", "cpu")) == ("sampling", "sampling")
    assert info["auto_cuda"] == ("detectron2" if has_detectron2_C() else "torchvision")
    if not has_detectron2_C():
        with pytest.raises(RuntimeError, match="_C"):
            check_deform_backend("detectron2")
        with pytest.raises(RuntimeError, match="_C"):
            DeformConv(2, 2, 3, backend="detectron2")


def test_one_init_for_both_modules_and_classes_are_stable():
    import pickle

    for modulated in (False, True):
        a = build_deform_conv(4, 4, modulated=modulated, kernel_size=3, stride=2, padding=1, dilation=1,
                              backend="sampling")
        b = build_deform_conv(4, 4, modulated=modulated, kernel_size=3, stride=2, padding=1, dilation=1,
                              backend="torchvision")
        assert type(a) is type(b)  # the kernel is an attribute, not a class
        assert (a.stride, a.padding, a.dilation) == ((2, 2), (1, 1), (1, 1))
        assert (a.bias is not None) is modulated  # detectron2's default bias per class
        c = pickle.loads(pickle.dumps(a))
        assert type(c) is type(a) and c.backend == "sampling"
        for k, v in a.state_dict().items():
            assert torch.equal(v, c.state_dict()[k])


@pytest.mark.skipif(not has_detectron2_C(), reason="detectron2._C (compiled DCN kernel) not importable here")
def test_equals_detectron2_compiled_kernel():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    from detectron2.layers import DeformConv as d2_dcn
    from detectron2.layers import ModulatedDeformConv as d2_mdcn

    x = torch.randn(2, 4, 8, 8, device=dev)
    off = torch.randn(2, 36, 8, 8, device=dev)
    mask = torch.rand(2, 18, 8, 8, device=dev)
    ours = DeformConv(4, 4, 3, padding=1, deformable_groups=2).to(dev)
    theirs = d2_dcn(4, 4, 3, padding=1, deformable_groups=2).to(dev)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x, off), theirs(x, off), atol=1e-4, rtol=1e-4)
    ours.backend = "detectron2"
    torch.testing.assert_close(ours(x, off), theirs(x, off), atol=1e-6, rtol=1e-6)
    ours = ModulatedDeformConv(4, 4, 3, padding=1, deformable_groups=2).to(dev)
    theirs = d2_mdcn(4, 4, 3, padding=1, deformable_groups=2).to(dev)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x, off, mask), theirs(x, off, mask), atol=1e-4, rtol=1e-4)
    if dev == "cuda":  # detectron2 has no CPU DCNv2
        ours.backend = "detectron2"
        torch.testing.assert_close(ours(x, off, mask), theirs(x, off, mask), atol=1e-6, rtol=1e-6)
