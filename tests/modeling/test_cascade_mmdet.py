"""MMDetCascadeROIHeads: per-stage sampling, stage loss weights, per-stage mask heads, test-time averaging.

The ROI heads run alone on random FPN-like features (no backbone), so every test takes well under a second.
Helpers here are also used by test_htc.py.
"""
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import Boxes, Instances, PolygonMasks, pairwise_iou
from detectron2.utils.events import EventStorage
from torch import nn

from cardd_d2.engine import setup_cfg
from cardd_d2.modeling.roi_heads import FocalFastRCNNOutputLayers, MMDetCascadeROIHeads
from cardd_d2.modeling.roi_heads import cascade_mmdet
from cardd_d2.modeling.roi_heads.cascade_mmdet import average_stage_logits, average_stage_mask_probs

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
CASCADE = "CarDD/cascade_mask_rcnn_R_50_FPN.yaml"
HTC = "CarDD/htc_R_50_FPN.yaml"
K = 6
CH = 16
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
IMG_H, IMG_W = 96, 128
BATCH = 32  # ROIs sampled per image and stage (512 in the released config)
SMALL_HEADS = [
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", str(BATCH),
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "8",
    "MODEL.ROI_MASK_HEAD.NUM_CONV", "2",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "30",
]


@pytest.fixture(autouse=True)
def _event_storage():
    with EventStorage(0):
        yield


def make_cfg(config=CASCADE, *opts):
    return setup_cfg(os.path.join(CONFIGS, config), SMALL_HEADS + ["MODEL.DEVICE", "cpu"] + list(opts), freeze=False)


def build_heads(cfg, seed=0):
    torch.manual_seed(seed)
    shapes = {k: ShapeSpec(channels=CH, stride=s) for k, s in STRIDES.items()}
    return build_roi_heads(cfg, shapes)


def make_features(seed=1, n=2):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, CH, IMG_H // s, IMG_W // s, generator=g) for k, s in STRIDES.items()}


def make_targets(n=2):
    boxes = [[[8.0, 10.0, 50.0, 60.0], [60.0, 20.0, 120.0, 90.0]], [[20.0, 30.0, 70.0, 80.0]]]
    classes = [[0, 3], [5]]
    out = []
    for i in range(n):
        inst = Instances((IMG_H, IMG_W))
        b = torch.tensor(boxes[i % 2])
        inst.gt_boxes = Boxes(b)
        inst.gt_classes = torch.tensor(classes[i % 2])
        # a triangle inside each box, so masks are not the whole box
        inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x0, y1]] for x0, y0, x1, y1 in b.tolist()])
        out.append(inst)
    return out


def make_proposals(targets, seed=2, n_jitter=20, n_random=30):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in targets:
        gt = t.gt_boxes.tensor
        wh = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
        jit = gt.repeat_interleave(n_jitter, 0) + torch.randn(len(gt) * n_jitter, 4, generator=g) * 0.1 * wh.repeat_interleave(
            n_jitter, 0
        )
        xy = torch.rand(n_random, 2, generator=g) * torch.tensor([IMG_W - 20.0, IMG_H - 20.0])
        rnd = torch.cat([xy, xy + 8 + torch.rand(n_random, 2, generator=g) * 30], 1)
        boxes = Boxes(torch.cat([jit, rnd]))
        boxes.clip((IMG_H, IMG_W))
        p = Instances((IMG_H, IMG_W))
        p.proposal_boxes = boxes
        p.objectness_logits = torch.zeros(len(boxes))
        out.append(p)
    return out


def train_losses(heads, seed=5, features=None):
    heads.train()
    targets = make_targets()
    torch.manual_seed(seed)  # the samplers draw from torch's global generator
    features = features if features is not None else make_features()
    _, losses = heads(None, features, make_proposals(targets), targets)
    return losses


def infer(heads):
    heads.eval()
    targets = make_targets()
    with torch.no_grad():
        out, _ = heads(None, make_features(), make_proposals(targets))
    return out


def sharpen(heads, seed=3):
    """Random, larger classifier and mask-logit weights so that averaging choices give visibly different numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t, p in enumerate(heads.box_predictor):
            p.cls_score.weight.copy_(torch.randn(p.cls_score.weight.shape, generator=g) * (0.5 + t))
        for t, h in enumerate(heads.mask_head):
            h.predictor.weight.copy_(torch.randn(h.predictor.weight.shape, generator=g) * (0.5 + t))
    return heads


# --------------------------------------------------------------------------------------------------- structure
def test_structure_follows_mmdet_cascade():
    heads = build_heads(make_cfg())
    assert isinstance(heads, MMDetCascadeROIHeads)
    assert heads.num_cascade_stages == 3
    assert [m.thresholds[1] for m in heads.proposal_matchers] == [0.5, 0.6, 0.7]
    assert not any(m.allow_low_quality_matches for m in heads.proposal_matchers)
    stds = [[1.0 / w for w in p.box2box_transform.weights] for p in heads.box_predictor]
    expected = [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
    for got, exp in zip(stds, expected):
        assert got == pytest.approx(exp, rel=1e-9)
    assert all(isinstance(p, FocalFastRCNNOutputLayers) for p in heads.box_predictor)
    assert all(p.bbox_pred.out_features == 4 for p in heads.box_predictor)  # class-agnostic
    assert isinstance(heads.mask_head, nn.ModuleList) and len(heads.mask_head) == 3
    assert heads.stage_loss_weights == [1.0, 0.5, 0.25]
    assert (heads.batch_size_per_image, heads.positive_fraction, heads.proposal_append_gt) == (BATCH, 0.25, True)


def test_stage_loss_weights_length_is_checked():
    with pytest.raises(ValueError, match="STAGE_LOSS_WEIGHTS"):
        build_heads(make_cfg(CASCADE, "MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS", "(1.0, 0.5)"))


# --------------------------------------------------------------------------------------------------- training
def test_training_losses_and_gradients_reach_every_stage():
    heads = build_heads(make_cfg())
    losses = train_losses(heads)
    assert set(losses) == {f"{k}_stage{t}" for k in ("loss_cls", "loss_box_reg", "loss_mask") for t in range(3)}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for t in range(3):
        assert heads.mask_head[t].predictor.weight.grad.abs().sum() > 0, t
        assert heads.box_predictor[t].bbox_pred.weight.grad.abs().sum() > 0, t
        assert heads.box_head[t].fc1.weight.grad.abs().sum() > 0, t


def test_each_mask_head_is_trained_by_its_own_stage_only():
    heads = build_heads(make_cfg())
    losses = train_losses(heads)
    losses["loss_mask_stage1"].backward()
    grads = [h.predictor.weight.grad for h in heads.mask_head]
    assert grads[0] is None and grads[2] is None
    assert grads[1].abs().sum() > 0


def test_stage_loss_weights_scale_box_and_mask_losses():
    a = build_heads(make_cfg())
    b = build_heads(make_cfg(CASCADE, "MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS", "(1.0, 1.0, 1.0)"))
    b.load_state_dict(a.state_dict())
    la, lb = train_losses(a), train_losses(b)
    assert set(la) == set(lb)
    for key in la:
        w = (1.0, 0.5, 0.25)[int(key[-1])]
        torch.testing.assert_close(la[key], lb[key] * w)
    assert not torch.allclose(la["loss_mask_stage2"], lb["loss_mask_stage2"])


def test_every_stage_resamples_at_its_own_iou():
    heads = build_heads(make_cfg())
    targets = make_targets()
    props = make_proposals(targets, n_jitter=60)  # many positives: the 25 % cap must bite
    for stage, iou in enumerate((0.5, 0.6, 0.7)):
        torch.manual_seed(0)
        sampled = heads._sample_stage(props, targets, stage)
        for s, t in zip(sampled, targets):
            assert len(s) == BATCH
            fg = s.gt_classes < K
            assert 0 < int(fg.sum()) <= int(BATCH * 0.25)
            ious = pairwise_iou(s.proposal_boxes, t.gt_boxes).max(1).values
            assert (ious[fg] >= iou).all() and (ious[~fg] < iou).all()
            # ROIs that are gt boxes added as proposals are flagged (mmdet's pos_is_gt); they are positives
            assert fg[s.from_gt].all() and (ious[s.from_gt] > 0.999).all()
    # with no other positive proposal, every gt box is sampled as a positive and flagged
    sampled = heads._sample_stage(make_proposals(targets, n_jitter=0), targets, 2)
    for s, t in zip(sampled, targets):
        assert int(s.from_gt.sum()) == int((s.gt_classes < K).sum()) == len(t)


def test_refinement_drops_sampled_gt_boxes():
    heads = build_heads(make_cfg())
    heads.train()
    targets = make_targets()
    feats = [make_features()[f] for f in heads.box_in_features]
    torch.manual_seed(0)
    sampled = heads._sample_stage(make_proposals(targets), targets, 0)
    preds = heads._run_stage(feats, sampled, 0)
    refined = heads._refine(preds, sampled, 0, [(IMG_H, IMG_W)] * 2)
    for r, s in zip(refined, sampled):
        assert len(r) == int((~s.from_gt).sum())
        assert not r.proposal_boxes.tensor.requires_grad


def test_focal_classification_loss_goes_through_roi_cls_loss(monkeypatch):
    from cardd_d2.modeling.roi_heads import focal_fast_rcnn

    calls = []
    real = focal_fast_rcnn.roi_cls_loss

    def spy(logits, gt_classes, **kw):
        out = real(logits, gt_classes, **kw)
        calls.append((kw, out.detach()))
        return out

    monkeypatch.setattr(focal_fast_rcnn, "roi_cls_loss", spy)
    heads = build_heads(make_cfg(CASCADE, "MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "focal"))
    losses = train_losses(heads)
    assert len(calls) == 3
    assert all(kw == dict(loss_type="focal", variant="mmdet_sigmoid", alpha=0.5, gamma=2.0) for kw, _ in calls)
    for t, w in enumerate((1.0, 0.5, 0.25)):
        torch.testing.assert_close(losses[f"loss_cls_stage{t}"].detach(), calls[t][1] * w)


# --------------------------------------------------------------------------------------------------- inference
def _capture_stage_logits(heads):
    logits = []
    for p in heads.box_predictor:
        p.register_forward_hook(lambda m, i, o: logits.append(o[0].detach().clone()))
    return logits


def test_inference_softmaxes_the_mean_of_stage_logits(monkeypatch):
    heads = sharpen(build_heads(make_cfg()))
    stage_logits = _capture_stage_logits(heads)
    seen = {}
    real = cascade_mmdet.fast_rcnn_inference

    def spy(boxes, scores, *args):
        seen["scores"] = [s.clone() for s in scores]
        return real(boxes, scores, *args)

    monkeypatch.setattr(cascade_mmdet, "fast_rcnn_inference", spy)
    out = infer(heads)
    assert len(stage_logits) == 3
    expected = torch.softmax(sum(stage_logits) / 3.0, dim=1)
    torch.testing.assert_close(torch.cat(seen["scores"]), expected)
    mean_of_probs = sum(torch.softmax(x, dim=1) for x in stage_logits) / 3.0
    assert not torch.allclose(expected, mean_of_probs, atol=1e-3)  # detectron2's rule would differ
    assert all(len(o) > 0 and o.has("pred_masks") for o in out)


def test_inference_averages_sigmoid_masks_of_all_stages():
    heads = sharpen(build_heads(make_cfg()))
    mask_logits = []
    for h in heads.mask_head:
        h.predictor.register_forward_hook(lambda m, i, o: mask_logits.append(o.detach().clone()))
    out = infer(heads)
    assert len(mask_logits) == 3
    classes = torch.cat([o.pred_classes for o in out])
    rows = torch.arange(len(classes))
    expected = sum(x[rows, classes].sigmoid() for x in mask_logits) / 3.0
    got = torch.cat([o.pred_masks for o in out])
    assert got.shape == (len(classes), 1, 28, 28)
    torch.testing.assert_close(got[:, 0], expected)
    sigmoid_of_mean = (sum(x[rows, classes] for x in mask_logits) / 3.0).sigmoid()
    assert not torch.allclose(got[:, 0], sigmoid_of_mean, atol=1e-3)


def test_averaging_helpers():
    a, b = torch.tensor([[0.0, 2.0]]), torch.tensor([[4.0, -2.0]])
    torch.testing.assert_close(average_stage_logits([a, b]), torch.tensor([[2.0, 0.0]]))
    inst = Instances((4, 4))
    inst.pred_classes = torch.tensor([1])
    logits = [torch.full((1, 2, 2, 2), v) for v in (0.0, 10.0)]
    logits[0][:, 0] = -50.0  # other class channel must be ignored
    probs = average_stage_mask_probs(logits, [inst])
    torch.testing.assert_close(probs, torch.full((1, 1, 2, 2), (0.5 + torch.sigmoid(torch.tensor(10.0)).item()) / 2))
    with pytest.raises(ValueError):
        average_stage_logits([])


# --------------------------------------------------------------------------------------------------- checkpoints
def test_single_head_checkpoint_initialises_every_stage():
    single = build_heads(make_cfg("CarDD/mask_rcnn_R_50_FPN.yaml"), seed=7)  # one box head, one mask head
    cascade = build_heads(make_cfg(), seed=0)
    before = cascade.box_predictor[1].bbox_pred.weight.clone()
    wrapper = nn.Module()
    wrapper.roi_heads = cascade
    state = {f"roi_heads.{k}": v for k, v in single.state_dict().items()}
    result = wrapper.load_state_dict(state, strict=False)
    for t in range(3):
        torch.testing.assert_close(cascade.mask_head[t].mask_fcn1.weight, single.mask_head.mask_fcn1.weight)
        torch.testing.assert_close(cascade.box_head[t].fc1.weight, single.box_head.fc1.weight)
        torch.testing.assert_close(cascade.box_predictor[t].cls_score.weight, single.box_predictor.cls_score.weight)
    # class-specific box regression (6 x 4 outputs) does not fit the class-agnostic layers: left as initialised
    torch.testing.assert_close(cascade.box_predictor[1].bbox_pred.weight, before)
    assert not result.unexpected_keys
    # a per-stage checkpoint loads unchanged
    other = build_heads(make_cfg(), seed=3)
    other.load_state_dict(cascade.state_dict())
    torch.testing.assert_close(other.mask_head[2].predictor.weight, cascade.mask_head[2].predictor.weight)


@pytest.mark.parametrize("config", [CASCADE, HTC])
def test_images_without_annotations_train(config):
    heads = build_heads(make_cfg(config))
    heads.train()
    empty = Instances((IMG_H, IMG_W))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    empty.gt_masks = PolygonMasks([])
    targets = make_targets()
    _, mixed = heads(None, make_features(), make_proposals(targets), [targets[0], empty])
    _, none = heads(None, make_features(), make_proposals(targets), [empty, empty])
    assert all(torch.isfinite(v) for v in list(mixed.values()) + list(none.values()))
    assert mixed["loss_mask_stage0"] > 0 and none["loss_mask_stage0"] == 0 and none["loss_cls_stage0"] > 0
    sum(none.values()).backward()
