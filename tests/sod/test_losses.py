"""SOD losses against hand-computed formulas on tiny tensors."""
import math

import numpy as np
import pytest
import torch

from cardd_sod import build_sod_loss, build_sod_model
from cardd_sod.data.edges import mask_to_edge
from cardd_sod.losses import bce2d, iou_loss, list_sod_losses
from cardd_sod.models.csnet import csnet_dynamic_weight_decay


def _bce(p, t):
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _flat(x):
    return [float(v) for v in x.flatten()]


def test_loss_names_match_models():
    from cardd_sod import list_sod_models
    def paper(names):  # tiny*: the tests' stand-ins
        return [n for n in names if not n.startswith("tiny")]
    assert paper(list_sod_losses()) == paper(list_sod_models())
    with pytest.raises(KeyError, match="unknown SOD loss"):
        build_sod_loss("foo")


def test_u2net_loss_is_sum_of_seven_bce_means():
    target = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    probs = [torch.tensor([0.9, 0.2, 0.6, 0.3]) * (1 - 0.1 * k) + 0.05 * k for k in range(7)]
    outs = tuple(p.view(1, 1, 2, 2) for p in probs)
    total, terms = build_sod_loss("u2net")(outs, target)
    expected_terms = [sum(_bce(p, t) for p, t in zip(_flat(o), _flat(target))) / 4 for o in outs]
    assert list(terms) == ["d0", "d1", "d2", "d3", "d4", "d5", "d6"]
    for name, e in zip(terms, expected_terms):
        assert terms[name].item() == pytest.approx(e, rel=1e-5)
    assert total.item() == pytest.approx(sum(expected_terms), rel=1e-5)


def test_poolnet_loss_sum_over_iter_size_and_batch():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0, -3.0, 1.5]).view(2, 1, 1, 3)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.25, 1.0]).view(2, 1, 1, 3)
    total, terms = build_sod_loss("poolnet")(logits, target)
    s = sum(math.log1p(math.exp(z)) - t * z for z, t in zip(_flat(logits), _flat(target)))
    assert terms["bce_sum"].item() == pytest.approx(s, rel=1e-5)
    assert total.item() == pytest.approx(s / (10 * 2), rel=1e-5)
    total1, _ = build_sod_loss("poolnet", iter_size=1)(logits, target)
    assert total1.item() == pytest.approx(s / 2, rel=1e-5)


def _iou_hand(p, t):
    inter = sum(a * b for a, b in zip(p, t))
    return 1 - inter / (sum(t) + sum(p) - inter)


def _bce2d_hand(p, e):
    npos = sum(1 for v in e if v == 1)
    nneg = sum(1 for v in e if v == 0)
    n = npos + nneg
    w = [nneg / n if v == 1 else (1.1 * npos / n if v == 0 else 0.0) for v in e]
    return sum(wi * _bce(pi, ei) if wi else 0.0 for wi, pi, ei in zip(w, p, e)) / len(e)


def test_iou_and_bce2d_helpers():
    p = torch.tensor([0.8, 0.3, 0.6, 0.1, 0.7, 0.4, 0.9, 0.2]).view(2, 1, 2, 2)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).view(2, 1, 2, 2)
    exp_iou = (_iou_hand(_flat(p[0]), _flat(t[0])) + _iou_hand(_flat(p[1]), _flat(t[1]))) / 2
    assert iou_loss(p, t).item() == pytest.approx(exp_iou, rel=1e-6)
    e = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0]).view(2, 1, 2, 2)  # 0.5: weight 0
    assert bce2d(p, e).item() == pytest.approx(_bce2d_hand(_flat(p), _flat(e)), rel=1e-6)
    with pytest.raises(ValueError, match="bce2d"):
        bce2d(p, e[:, :, :1])


def test_sgl_krn_loss_formula():
    torch.manual_seed(0)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view(1, 1, 3, 3)
    edge = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view(1, 1, 3, 3)
    outs = tuple(torch.rand(1, 1, 3, 3) * 0.9 + 0.05 for _ in range(10))
    total, terms = build_sod_loss("sgl_krn")(outs, target, edge)
    t = _flat(target)

    def bi(o):
        return sum(_bce(p, q) for p, q in zip(_flat(o), t)) / 9 + _iou_hand(_flat(o), t)

    expected = 2 * bi(outs[0]) + bi(outs[1])
    for k in range(1, 5):
        expected += bi(outs[2 * k]) + _bce2d_hand(_flat(outs[2 * k + 1]), _flat(edge))
    assert terms["final"].item() == pytest.approx(bi(outs[0]), rel=1e-5)
    assert terms["contour3"].item() == pytest.approx(_bce2d_hand(_flat(outs[7]), _flat(edge)), rel=1e-5)
    assert total.item() == pytest.approx(expected / 10, rel=1e-5)
    # edge defaults to mask_to_edge(target)
    total_d, _ = build_sod_loss("sgl_krn")(outs, target)
    total_e, _ = build_sod_loss("sgl_krn")(outs, target, mask_to_edge(target))
    assert total_d.item() == pytest.approx(total_e.item())
    with pytest.raises(ValueError, match="expected 10 model output"):
        build_sod_loss("sgl_krn")(outs[:7], target)


def test_mask_to_edge_bands():
    m = torch.zeros(1, 1, 7, 7)
    m[..., 1:6, 1:6] = 1.0
    e = mask_to_edge(m)
    expected = torch.ones(7, 7)
    expected[2:5, 2:5] = 0.0          # interior (eroded) stays 0; the band is 1 px outside + 1 px inside
    assert torch.equal(e[0, 0], expected)
    # 2x2 square: erosion is empty -> band is the 4x4 dilation
    m2 = np.zeros((6, 6), np.float32)
    m2[2:4, 2:4] = 1.0
    e2 = mask_to_edge(m2)
    assert isinstance(e2, np.ndarray) and e2.shape == (6, 6)
    exp2 = np.zeros((6, 6), np.float32)
    exp2[1:5, 1:5] = 1.0
    assert np.array_equal(e2, exp2)
    # full mask: outside counts as background -> the image border is an edge
    e3 = mask_to_edge(torch.ones(1, 4, 4))
    assert e3.shape == (1, 4, 4) and e3[0, 1:3, 1:3].sum() == 0 and e3.sum() == 12
    # soft mask thresholded at 0.5; empty mask -> no edge
    assert mask_to_edge(torch.full((5, 5), 0.4)).sum() == 0
    with pytest.raises(ValueError, match="mask_to_edge"):
        mask_to_edge(torch.zeros(2, 3, 4, 4))


def test_u2net_loss_under_bf16_autocast_runs_in_float32():
    outs = tuple(torch.full((1, 1, 2, 2), 0.25, dtype=torch.bfloat16) for _ in range(7))
    target = torch.zeros(1, 1, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = build_sod_loss("u2net")(outs, target)
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(7 * -math.log(0.75), rel=1e-5)


def _csnet_block_outputs(model, x):
    """Independent capture of every ILBlock sub-module output through forward hooks."""
    captured = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: captured.append((mod, out)))
             for blk in model.il_blocks() for m in (blk.conv1x1, blk.conv3x3_1, blk.conv3x3_2)]
    out = model(x)
    for h in hooks:
        h.remove()
    return out, captured


def test_csnet_loss_and_dynamic_weight_decay():
    torch.manual_seed(0)
    model = build_sod_model("csnet", variant="L-x1").train()
    with pytest.raises(RuntimeError, match="no recorded activations"):
        csnet_dynamic_weight_decay(model)
    x = torch.randn(2, 3, 32, 32)
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    logits, captured = _csnet_block_outputs(model, x)
    hand = 0.0
    for mod, outs in captured:
        for bn, o in zip(mod.bns, outs):
            hand += (o.detach().mean(dim=(2, 3)).abs() * bn.weight.detach() ** 2).sum().item()
    hand = 0.5 * hand / 2
    dwd = csnet_dynamic_weight_decay(model)
    assert dwd.item() == pytest.approx(hand, rel=1e-5)

    with pytest.raises(ValueError, match="needs the model"):
        build_sod_loss("csnet")(logits, target)
    bce = sum(math.log1p(math.exp(z)) - t * z for z, t in zip(_flat(logits.detach()), _flat(target))) / target.numel()
    total0, terms0 = build_sod_loss("csnet", dwd_weight=0)(logits, target)
    assert total0.item() == pytest.approx(bce, rel=1e-5) and set(terms0) == {"bce"}
    total, terms = build_sod_loss("csnet", model=model)(logits, target)
    assert terms["dynamic_weight_decay"].item() == pytest.approx(hand, rel=1e-5)
    assert total.item() == pytest.approx(bce + 3.0 * hand, rel=1e-5)

    # the regulariser's gradient reaches only the block BN weights and shrinks them
    model.zero_grad()
    dwd.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(".bns." in n and n.endswith("weight") and n.startswith("stage") for n in with_grad)
    opt = torch.optim.SGD([p for p in model.parameters() if p.grad is not None], lr=1e-3)
    opt.step()
    assert csnet_dynamic_weight_decay(model).item() < dwd.item()   # same recorded activations, smaller gammas


def test_loss_shape_errors():
    with pytest.raises(ValueError, match=r"poolnet loss: output shape \(1, 1, 2, 2\) != target shape"):
        build_sod_loss("poolnet")(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="expected 7 model output"):
        build_sod_loss("u2netp")(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
