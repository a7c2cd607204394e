"""roi_cls_loss against hand-written float64 formulas, empty batches and gradients."""
import math

import pytest
import torch

from cardd_d2.modeling.losses import roi_cls_loss

# 3 ROIs, K = 2 foreground classes + background (column 2). ROI 2 is background.
LOGITS = [[1.5, -0.5, 0.2], [-1.0, 2.0, 0.0], [0.3, 0.1, 2.5]]
GT = [0, 1, 2]


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _mmdet_by_hand(logits, gt, alpha, gamma):
    total = 0.0
    for row, g in zip(logits, gt):
        for c, z in enumerate(row):
            p = _sigmoid(z)
            if c == g:  # positive column (background ROIs: column K)
                total += -alpha * (1 - p) ** gamma * math.log(p)
            else:
                total += -(1 - alpha) * p**gamma * math.log(1 - p)
    return total / len(logits)


def _softmax_by_hand(logits, gt, alpha, gamma):
    total = 0.0
    for row, g in zip(logits, gt):
        e = [math.exp(z) for z in row]
        pt = e[g] / sum(e)
        total += -alpha * (1 - pt) ** gamma * math.log(pt)
    return total / len(logits)


def _ce_by_hand(logits, gt):
    return sum(-math.log(math.exp(r[g]) / sum(math.exp(z) for z in r)) for r, g in zip(logits, gt)) / len(logits)


def _t(x, dtype=torch.float64, grad=False):
    return torch.tensor(x, dtype=dtype, requires_grad=grad)


@pytest.mark.parametrize("alpha,gamma", [(0.5, 2.0), (0.25, 1.0), (0.75, 0.5), (0.25, 5.0)])
def test_mmdet_sigmoid_matches_hand_computation(alpha, gamma):
    got = roi_cls_loss(_t(LOGITS, torch.float32), torch.tensor(GT), "focal", "mmdet_sigmoid", alpha, gamma)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_mmdet_by_hand(LOGITS, GT, alpha, gamma), rel=1e-5)


def test_mmdet_sigmoid_single_value_by_hand():
    # one background ROI, 2 logits (K = 1): column 1 positive, column 0 negative.
    z0, z1, a, g = 0.0, 0.0, 0.5, 2.0
    # p = 0.5 for both: 0.5*0.25*ln2 (positive) + 0.5*0.25*ln2 (negative) = 0.25 ln 2
    got = roi_cls_loss(_t([[z0, z1]]), torch.tensor([1]), "focal", "mmdet_sigmoid", a, g)
    assert got.item() == pytest.approx(0.25 * math.log(2), rel=1e-12)


def test_mmdet_sigmoid_background_column_is_positive():
    # A background ROI is penalised for a LOW background logit: swapping the label must change the loss.
    logits = _t([[3.0, -3.0, -3.0]])
    fg = roi_cls_loss(logits, torch.tensor([0]), variant="mmdet_sigmoid")
    bg = roi_cls_loss(logits, torch.tensor([2]), variant="mmdet_sigmoid")
    assert fg.item() < 0.01 < bg.item()
    assert bg.item() == pytest.approx(_mmdet_by_hand([[3.0, -3.0, -3.0]], [2], 0.5, 2.0), rel=1e-12)


def test_mmdet_sigmoid_is_sum_over_logits_divided_by_rois():
    one = roi_cls_loss(_t(LOGITS[:1]), torch.tensor(GT[:1]), variant="mmdet_sigmoid")
    doubled = roi_cls_loss(_t(LOGITS[:1] * 2), torch.tensor(GT[:1] * 2), variant="mmdet_sigmoid")
    assert doubled.item() == pytest.approx(one.item(), rel=1e-12)  # mean over ROIs, not over ROIs x classes


@pytest.mark.parametrize("alpha,gamma", [(0.5, 2.0), (0.25, 3.0), (0.75, 0.0)])
def test_softmax_variant_matches_paper_eq1(alpha, gamma):
    got = roi_cls_loss(_t(LOGITS), torch.tensor(GT), "focal", "softmax", alpha, gamma)
    assert got.item() == pytest.approx(_softmax_by_hand(LOGITS, GT, alpha, gamma), rel=1e-10)


def test_softmax_variant_gamma0_alpha1_is_cross_entropy():
    got = roi_cls_loss(_t(LOGITS), torch.tensor(GT), "focal", "softmax", alpha=1.0, gamma=0.0)
    assert got.item() == pytest.approx(_ce_by_hand(LOGITS, GT), rel=1e-10)


def test_ce_matches_hand_computation():
    got = roi_cls_loss(_t(LOGITS), torch.tensor(GT), "ce")
    assert got.item() == pytest.approx(_ce_by_hand(LOGITS, GT), rel=1e-10)


@pytest.mark.parametrize(
    "loss_type,variant", [("ce", "mmdet_sigmoid"), ("focal", "mmdet_sigmoid"), ("focal", "softmax")]
)
def test_empty_batch_is_zero_with_grad(loss_type, variant):
    logits = torch.zeros((0, 7), requires_grad=True)
    loss = roi_cls_loss(logits, torch.zeros((0,), dtype=torch.long), loss_type, variant)
    assert loss.dim() == 0 and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == (0, 7)


@pytest.mark.parametrize("variant", ["mmdet_sigmoid", "softmax"])
def test_gradcheck(variant):
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    gt = torch.tensor([0, 3, 1, 3, 2])
    assert torch.autograd.gradcheck(lambda x: roi_cls_loss(x, gt, "focal", variant, 0.25, 2.0), (logits,))


def test_half_precision_is_computed_in_fp32():
    loss = roi_cls_loss(_t(LOGITS, torch.bfloat16), torch.tensor(GT), "focal", "mmdet_sigmoid")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_mmdet_by_hand(LOGITS, GT, 0.5, 2.0), rel=2e-2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="loss_type"):
        roi_cls_loss(_t(LOGITS), torch.tensor(GT), "hinge")
    with pytest.raises(ValueError, match="variant"):
        roi_cls_loss(_t(LOGITS), torch.tensor(GT), "focal", "poly")
    with pytest.raises(ValueError, match="gt_classes"):
        roi_cls_loss(_t(LOGITS), torch.tensor([0, 1]))
