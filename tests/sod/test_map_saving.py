"""Saliency maps are written as the released test scripts write them: bit-exact uint8 against small hand-written
references of each rule (CSNet skimage floor, U2-Net min-max + PIL bilinear, PoolNet / SGL-KRN cv2 rounding)."""
import math
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from cardd_sod.map_saving import saliency_to_uint8, write_map

# dyadic values (k / 64): every interpolation below is exact in float32, so floor / round decide alone
SAL = np.array([[0.5, 0.25, 0.0], [1.0, 0.375, 0.125]], np.float32)


def _linear_mirror(a, n_out, axis):
    """1-D linear resize with half-pixel centres and mirror borders (skimage order 1, mode 'reflect')."""
    n = a.shape[axis]
    out = []
    for i in range(n_out):
        c = (i + 0.5) * n / n_out - 0.5
        i0 = math.floor(c)
        f = c - i0
        j0, j1 = (abs(j) if j < 0 else (2 * (n - 1) - j if j > n - 1 else j) for j in (i0, i0 + 1))
        out.append((1 - f) * np.take(a, j0, axis) + f * np.take(a, j1, axis))
    return np.stack(out, axis)


def ref_csnet(sal, hw):
    up = _linear_mirror(_linear_mirror(sal.astype(np.float64), hw[0], 0), hw[1], 1)
    return np.floor(up * 255).astype(np.uint8)


def _pil_bilinear_pass(a, n_out, axis):
    """One pass of PIL's bilinear resampling of 8-bit data: triangle filter, support scaled when shrinking,
    windows clipped at the borders and renormalised, result rounded half up."""
    n = a.shape[axis]
    scale = n / n_out
    support = max(scale, 1.0)
    out = []
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n)
        w = np.array([max(0.0, 1 - abs((j - centre + 0.5) / support)) for j in range(lo, hi)])
        w /= w.sum()
        out.append(sum(wj * np.take(a, j, axis).astype(np.float64) for wj, j in zip(w, range(lo, hi))))
    return np.clip(np.floor(np.stack(out, axis) + 0.5), 0, 255)


def ref_u2net(sal, hw):
    norm = (sal - sal.min()) / (sal.max() - sal.min())
    u8 = np.floor(norm * 255)                                   # PIL float -> 8-bit truncates
    if hw[1] != u8.shape[1]:
        u8 = _pil_bilinear_pass(u8, hw[1], 1)                   # horizontal pass first, 8-bit in between
    if hw[0] != u8.shape[0]:
        u8 = _pil_bilinear_pass(u8, hw[0], 0)
    return u8.astype(np.uint8)


def ref_poolnet(sal):
    x = np.float32(255) * sal
    return np.array([[min(255, max(0, round(float(v)))) for v in row] for row in x], np.uint8)  # half to even


def test_csnet_rule_floor_after_skimage_resize():
    for hw in [(4, 6), (2, 3), (5, 7)]:
        got = saliency_to_uint8(SAL, hw, "skimage_floor")
        if hw[0] % 2 == 0 and hw[1] % 3 == 0:  # exact dyadic interpolation: compare with the hand reference
            assert np.array_equal(got, ref_csnet(SAL, hw)), hw
        assert got.shape == hw and got.dtype == np.uint8
    got = saliency_to_uint8(SAL, (4, 6), "skimage_floor")
    up = _linear_mirror(_linear_mirror(SAL.astype(np.float64), 4, 0), 6, 1) * 255
    # corner: 0.75 * (0.75 * 0.5 + 0.25 * 0.25) + 0.25 * (0.75 * 1 + 0.25 * 0.375) = 0.5390625 -> 137.46 -> 137
    assert up[0, 0] == 0.5390625 * 255 and got[0, 0] == 137
    assert (np.round(up) != np.floor(up)).sum() >= 10  # floor, not round, on these pixels
    # downscaling without anti-aliasing: 2x2 means of the dyadic input
    big = np.kron(SAL, np.ones((2, 2), np.float32))[:, :6]
    assert np.array_equal(saliency_to_uint8(big, (2, 3), "skimage_floor"), np.floor(SAL * 255).astype(np.uint8))


def test_u2net_rule_minmax_truncate_then_pil_bilinear():
    sal = SAL * 0.5 + 0.2  # min-max normalisation brings it back to [0, 1]
    for hw in [(4, 6), (2, 3), (3, 5), (1, 2)]:
        assert np.array_equal(saliency_to_uint8(sal, hw, "minmax_pil"), ref_u2net(sal, hw)), hw
    # the release's own calls: Image.fromarray(x * 255).convert('RGB').resize(..., BILINEAR), first channel
    norm = (sal - sal.min()) / (sal.max() - sal.min())
    rgb = np.asarray(Image.fromarray(norm * 255).convert("RGB").resize((11, 7), resample=Image.BILINEAR))
    assert np.array_equal(saliency_to_uint8(sal, (7, 11), "minmax_pil"), rgb[:, :, 0])
    # 0.375 -> 95.625: floored at the network size (95) before resizing
    assert saliency_to_uint8(sal, (2, 3), "minmax_pil")[1, 1] == 95
    assert not saliency_to_uint8(np.full((3, 3), 0.7, np.float32), (5, 5), "minmax_pil").any()


def _float32_ties():
    """float32 x with 255 * x (float32) exactly k + 0.5, k = 0..9: the round-half-to-even cases."""
    out = []
    for k in range(10):
        x = np.float32((k + 0.5) / 255)
        for _ in range(64):
            y = np.float32(255) * x
            if y == k + 0.5:
                out.append(x)
                break
            x = np.nextafter(x, np.float32(1 if y < k + 0.5 else 0), dtype=np.float32)
    return np.array(out, np.float32)


def test_poolnet_rule_round_half_even_like_cv2_imwrite(tmp_path):
    ties = _float32_ties()
    assert len(ties) >= 6
    sal = np.concatenate([ties, np.float32([0.0, 1.0, 0.999, 0.4375, 0.5, 0.30196])])[None]
    got = saliency_to_uint8(sal, sal.shape, "cv2_round")
    assert np.array_equal(got, ref_poolnet(sal))
    assert got[0, list(range(3))].tolist()[:3] == [round(float(np.float32(255) * t)) for t in ties[:3]]
    # the release's own call: cv2.imwrite of the float map 255 * sigmoid
    cv2.imwrite(str(tmp_path / "release.png"), 255 * sal)
    assert np.array_equal(got, cv2.imread(str(tmp_path / "release.png"), cv2.IMREAD_UNCHANGED))


def test_rule_errors_and_writer(tmp_path):
    with pytest.raises(ValueError, match="unknown map-saving rule 'round'"):
        saliency_to_uint8(SAL, (2, 3), "round")
    with pytest.raises(ValueError, match=r"one saliency map \[H, W\], got shape \(2, 2, 3\)"):
        saliency_to_uint8(np.stack([SAL, SAL]), (2, 3), "cv2_round")
    t = torch.from_numpy(SAL)[None, None]  # tensors with leading 1-dims are accepted
    assert np.array_equal(saliency_to_uint8(t, (2, 3), "cv2_round"), ref_poolnet(SAL))
    with pytest.raises(ValueError, match="uint8"):
        write_map(str(tmp_path / "x.png"), SAL)
    with pytest.raises(OSError, match="cannot write saliency map"):
        write_map(str(tmp_path / "x.unknownext"), np.zeros((2, 2), np.uint8))


class _FixedMap(torch.nn.Module):
    """Model stub whose saliency map is SAL stretched to the network input size."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x

    @staticmethod
    def saliency(outputs):
        h, w = outputs.shape[2:]
        rows = [SAL[min(int(i * 2 / h), 1)] for i in range(h)]
        m = np.stack([[r[min(int(j * 3 / w), 2)] for j in range(w)] for r in rows])
        return torch.from_numpy(m)[None, None].repeat(outputs.shape[0], 1, 1, 1)


@pytest.mark.parametrize("preset,rule", [("csnet", "skimage_floor"), ("u2net", "minmax_pil"),
                                         ("poolnet", "cv2_round"), ("sgl_krn", "cv2_round")])
def test_predictions_follow_the_model_rule(tmp_path, preset, rule):
    import dataclasses

    from cardd_sod.data import CarDDSODDataset
    from cardd_sod.data.layout import sod_split_dirs
    from cardd_sod.engine import predict_saliency_maps
    d = sod_split_dirs(str(tmp_path / "sod"), "TE")
    os.makedirs(d["image"])
    os.makedirs(d["mask"])
    rng = np.random.default_rng(0)
    cv2.imwrite(os.path.join(d["image"], "a.png"), rng.integers(0, 255, (30, 45, 3), dtype=np.uint8))
    cv2.imwrite(os.path.join(d["mask"], "a.png"), np.zeros((30, 45), np.uint8))
    from cardd_sod.models import get_sod_spec
    pp = get_sod_spec(preset).preprocess
    pp = dataclasses.replace(pp, size=(8, 12)) if preset in ("csnet", "u2net") else pp
    assert pp.save_rule == rule
    ds = CarDDSODDataset(str(tmp_path / "sod"), "TE", pp)
    out = str(tmp_path / "pred")
    assert predict_saliency_maps(_FixedMap(), ds, out, torch.device("cpu"), progress=False) == ["a"]
    net_in = ds[0]["image"][None]
    expect = saliency_to_uint8(_FixedMap.saliency(net_in)[0, 0], (30, 45), rule)
    written = cv2.imread(os.path.join(out, "a.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (30, 45) and np.array_equal(written, expect)
