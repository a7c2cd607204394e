"""SOD metrics: equal to py-sod-metrics called directly, and to hand-rolled numpy versions of the formulas."""
import os
import warnings

import cv2
import numpy as np
import pytest

import py_sod_metrics as psm
from cardd_sod.metrics import (EXTRA_COLUMNS, TABLE_COLUMNS, SaliencyEvaluator, authors_emeasure, evaluate_saliency,
                               format_markdown_table)

EPS = np.spacing(1)


def _example(seed=0, n=3, hw=(40, 52)):
    """Small pred/gt pairs (uint8) with structure: a box GT and a noisy, partly shifted prediction."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        gt = np.zeros(hw, np.uint8)
        y, x = 6 + 3 * i, 8 + 4 * i
        gt[y:y + 16, x:x + 20] = 255
        pred = (rng.random(hw) * 90).astype(np.uint8)
        pred[y + 2:y + 18, x - 3:x + 18] += 150
        pairs.append((f"img{i}", pred, gt))
    return pairs


def _write(tmp_path, pairs, pred_size=None):
    pd, gd = tmp_path / "pred", tmp_path / "gt"
    pd.mkdir(exist_ok=True)
    gd.mkdir(exist_ok=True)
    for name, p, g in pairs:
        cv2.imwrite(str(gd / f"{name}.png"), g)
        cv2.imwrite(str(pd / f"{name}.png"), p if pred_size is None else cv2.resize(p, pred_size))
    return str(pd), str(gd)


# ---- hand-rolled numpy versions of the formulas (MATLAB toolbox conventions)
def _norm(pred, gt):
    p = pred.astype(np.float64) / 255
    if p.max() != p.min():
        p = (p - p.min()) / (p.max() - p.min())
    return p, gt > 128


def _mae(p, g):
    return np.abs(p - g).mean()


def _adaptive_f(p, g, beta2=0.3):
    b = p >= min(2 * p.mean(), 1.0)
    tp = np.logical_and(b, g).sum()
    if tp == 0:
        return 0.0
    prec, rec = tp / b.sum(), tp / g.sum()
    return (1 + beta2) * prec * rec / (beta2 * prec + rec)


def _ssim(x, y):
    n = x.size
    mx, my = x.mean(), y.mean()
    sx = ((x - mx) ** 2).sum() / (n - 1 + EPS)
    sy = ((y - my) ** 2).sum() / (n - 1 + EPS)
    sxy = ((x - mx) * (y - my)).sum() / (n - 1 + EPS)
    a, b = 4 * mx * my * sxy, (mx ** 2 + my ** 2) * (sx + sy)
    return a / (b + EPS) if a != 0 else (1.0 if b == 0 else 0.0)


def _s_measure(p, g, alpha=0.5):
    gf = g.astype(np.float64)
    mu = gf.mean()
    if mu == 0:
        return 1 - p.mean()
    if mu == 1:
        return p.mean()

    def obj(v):
        return 2 * v.mean() / (v.mean() ** 2 + 1 + v.std(ddof=1) + EPS)

    so = mu * obj(p[g]) + (1 - mu) * obj(1 - p[~g])
    h, w = g.shape
    cy, cx = np.round(np.argwhere(g).mean(axis=0)).astype(int) + 1
    regions = [(slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)), (slice(cy, h), slice(0, cx)),
               (slice(cy, h), slice(cx, w))]
    sr = 0.0
    for r in regions:
        sub = gf[r]
        if sub.size:
            sr += sub.size / (h * w) * _ssim(p[r], sub)
    return max(0.0, alpha * so + (1 - alpha) * sr)


def _e_measure_mean_strict(p, g):
    fm = (p > p.mean()).astype(np.float64)
    gt = g.astype(np.float64)
    if gt.sum() == 0:
        enh = 1 - fm
    elif gt.sum() == gt.size:
        enh = fm
    else:
        a, b = fm - fm.mean(), gt - gt.mean()
        align = 2 * a * b / (a * a + b * b + EPS)
        enh = (align + 1) ** 2 / 4
    return enh.sum() / (gt.size - 1 + EPS)


def test_hand_rolled_formulas_match(tmp_path):
    pairs = _example()
    res = evaluate_saliency(*_write(tmp_path, pairs))
    normed = [_norm(p, g) for _, p, g in pairs]
    assert res["num_images"] == 3 and res["num_resized"] == 0
    assert res["MAE"] == pytest.approx(np.mean([_mae(p, g) for p, g in normed]), abs=1e-12)
    assert res["F_beta"] == pytest.approx(np.mean([_adaptive_f(p, g) for p, g in normed]), abs=1e-12)
    assert res["S_m"] == pytest.approx(np.mean([_s_measure(p, g) for p, g in normed]), abs=1e-10)
    assert res["E_m"] == pytest.approx(np.mean([_e_measure_mean_strict(p, g) for p, g in normed]), abs=1e-10)
    assert 0 < res["F_beta"] < 1 and 0 < res["MAE"] < 0.5


def test_equal_to_py_sod_metrics_called_directly(tmp_path):
    pairs = _example(seed=5)
    res = evaluate_saliency(*_write(tmp_path, pairs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = psm.Fmeasure(beta=0.3)
    wfm, sm, em, mae = psm.WeightedFmeasure(beta=1), psm.Smeasure(alpha=0.5), psm.Emeasure(), psm.MAE()
    for _, p, g in pairs:
        for m in (fm, wfm, sm, em, mae):
            m.step(pred=p, gt=g)
    f, e = fm.get_results()["fm"], em.get_results()["em"]
    assert res["F_beta"] == f["adp"] and res["wF_beta"] == wfm.get_results()["wfm"]
    assert res["S_m"] == sm.get_results()["sm"] and res["MAE"] == mae.get_results()["mae"]
    assert res["maxF"] == f["curve"].max() and res["meanF"] == f["curve"].mean()
    assert res["adpE_pysod"] == e["adp"] and res["maxE"] == e["curve"].max() and res["meanE"] == e["curve"].mean()
    assert res["E_m"] != res["adpE_pysod"]  # the authors' variant is a different number


def test_authors_emeasure_uses_mean_and_strict_threshold():
    gt = np.zeros((10, 10), bool)
    gt[:5] = True
    pred = np.zeros((10, 10))
    pred[:5] = 0.5  # mean 0.25: '> mean' selects rows 0-4 (perfect); 2 x mean = 0.5 with '>=' does too
    assert authors_emeasure(pred, gt) == pytest.approx(100 / 99, abs=1e-9)  # toolbox divides by (w h - 1)
    # pixels exactly at the mean: '>' excludes them (perfect here), '>=' would include them
    pred = np.zeros((10, 10))
    pred[:2] = 1.0
    pred[2:8] = 0.5  # mean = (20 + 30) / 100 = 0.5 exactly
    gt = np.zeros((10, 10), bool)
    gt[:2] = True
    assert pred.mean() == 0.5
    assert authors_emeasure(pred, gt) == pytest.approx(100 / 99, abs=1e-9)
    ev = psm.Emeasure()
    ev.gt_fg_numel, ev.gt_size = 20, 100
    assert ev.cal_em_with_threshold(pred, gt, pred.mean()) < 0.9


def test_resize_policy_and_missing_predictions(tmp_path):
    pairs = _example(seed=2)
    pd, gd = _write(tmp_path, pairs, pred_size=(26, 20))  # predictions at half size
    res = evaluate_saliency(pd, gd)
    assert res["num_resized"] == 3
    ev = SaliencyEvaluator()
    for name, _, g in pairs:
        p = cv2.imread(os.path.join(pd, name + ".png"), 0)
        ev.step(cv2.resize(p, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_LINEAR), g, name)
    assert res["MAE"] == ev.results()["MAE"] and res["S_m"] == ev.results()["S_m"]
    os.remove(os.path.join(pd, "img1.png"))
    with pytest.raises(FileNotFoundError, match=r"1 of 3 predictions missing.*img1"):
        evaluate_saliency(pd, gd)
    cv2.imwrite(os.path.join(pd, "img1_sal.png"), pairs[1][1])
    assert evaluate_saliency(pd, gd, names=["img0", "img2"])["num_images"] == 2
    with open(os.path.join(pd, "img2.png"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ValueError, match="unreadable prediction.*img2"):
        evaluate_saliency(pd, gd, names=["img0", "img2"])
    assert evaluate_saliency(pd, gd, names=["img1"], pred_suffix="_sal")["num_images"] == 1


def test_table_layout():
    md = format_markdown_table({"SGL-KRN": {"F_beta": 0.791, "wF_beta": 0.744, "S_m": 0.809, "E_m": 0.884,
                                            "MAE": 0.071}}, extra=False)
    lines = md.strip().splitlines()
    assert lines[0].count("|") == len(TABLE_COLUMNS) + 2
    assert lines[2] == "| SGL-KRN | 0.791 | 0.744 | 0.809 | 0.884 | 0.071 |"
    assert all(c in format_markdown_table({"a": {}}, extra=True) for c in EXTRA_COLUMNS)
