"""HTCROIHeads: interleaved box/mask execution, mask information flow, equivalence with the cascade when both are off."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances

from cardd_d2.modeling.roi_heads import HTCROIHeads
from cardd_d2.modeling.roi_heads.htc_mask_head import InfoFlowMaskHead
from test_cascade_mmdet import (  # noqa: F401  (_event_storage is an autouse fixture)
    CASCADE,
    HTC,
    K,
    _event_storage,
    build_heads,
    infer,
    make_cfg,
    make_features,
    sharpen,
    train_losses,
)

PLAIN = ["MODEL.HTC.INTERLEAVED", "False", "MODEL.HTC.MASK_INFO_FLOW", "False"]


def test_structure_has_info_flow_convs_on_later_stages_only():
    heads = build_heads(make_cfg(HTC))
    assert isinstance(heads, HTCROIHeads) and heads.interleaved and heads.mask_info_flow
    assert all(isinstance(h, InfoFlowMaskHead) for h in heads.mask_head)
    assert [hasattr(h, "conv_res") for h in heads.mask_head] == [False, True, True]
    conv = heads.mask_head[1].conv_res
    assert conv.kernel_size == (1, 1) and isinstance(conv.activation, torch.nn.ReLU)
    assert "mask_head.2.conv_res.weight" in heads.state_dict()
    plain = build_heads(make_cfg(HTC, *PLAIN))
    assert not any(hasattr(h, "conv_res") for h in plain.mask_head)


def test_semantic_branch_needs_the_htc_meta_architecture():
    # The semantic branch exists (tests/modeling/test_htc_semantic.py) but needs HTCRCNN to receive stuff maps;
    # the CarDD HTC configs (GeneralizedRCNN) are refused with a clear message.
    with pytest.raises(ValueError, match="WITH_SEMANTIC.*HTCRCNN.*WITH_SEMANTIC False"):
        build_heads(make_cfg(HTC, "MODEL.HTC.WITH_SEMANTIC", "True"))
    assert not build_heads(make_cfg(HTC)).with_semantic


def test_without_interleaving_and_info_flow_htc_equals_the_cascade():
    cascade = build_heads(make_cfg(CASCADE), seed=0)
    htc = build_heads(make_cfg(HTC, *PLAIN), seed=1)
    htc.load_state_dict(cascade.state_dict())  # same parameter names
    la, lb = train_losses(cascade), train_losses(htc)
    assert set(la) == set(lb)
    for k in la:
        torch.testing.assert_close(la[k], lb[k])
    sharpen(cascade)
    htc.load_state_dict(cascade.state_dict())
    oa, ob = infer(cascade), infer(htc)
    for a, b in zip(oa, ob):
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        torch.testing.assert_close(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)
        torch.testing.assert_close(a.pred_masks, b.pred_masks)


def test_info_flow_on_changes_masks_but_not_boxes():
    cascade = sharpen(build_heads(make_cfg(CASCADE)))
    flow = build_heads(make_cfg(HTC))
    missing = flow.load_state_dict(cascade.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"mask_head.{t}.conv_res.{p}" for t in (1, 2) for p in ("weight", "bias"))
    oa, ob = infer(cascade), infer(flow)
    for a, b in zip(oa, ob):
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        torch.testing.assert_close(a.scores, b.scores)
        assert not torch.allclose(a.pred_masks, b.pred_masks)


def test_info_flow_chains_previous_heads_in_training():
    heads = build_heads(make_cfg(HTC))
    losses = train_losses(heads)
    assert set(losses) == {f"{k}_stage{t}" for k in ("loss_cls", "loss_box_reg", "loss_mask") for t in range(3)}
    losses["loss_mask_stage2"].backward()
    h = heads.mask_head
    # stage 2 runs heads 0 and 1 (features only) and feeds head 1's last conv feature into its own conv_res
    for module in (h[0].mask_fcn1, h[1].mask_fcn1, h[1].conv_res, h[2].conv_res, h[2].predictor):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    # head 1's own feature only enters through h[2].conv_res; no stage uses head 0/1 logits here
    assert h[0].predictor.weight.grad is None and h[1].predictor.weight.grad is None
    assert h[0].mask_fcn1.weight.grad is not None


def test_info_flow_mask_logits_match_a_manual_chain():
    heads = sharpen(build_heads(make_cfg(HTC)))
    heads.eval()
    x = torch.randn(3, 16, 14, 14)
    h = heads.mask_head

    def convs(head, z):
        for c in head.conv_norm_relus:
            z = c(z)
        return z

    with torch.no_grad():
        f0 = convs(h[0], x)
        def info(head, f):  # ReLU(1x1 conv) of the previous head's last conv feature
            return torch.relu(torch.nn.functional.conv2d(f, head.conv_res.weight, head.conv_res.bias))

        f1 = convs(h[1], x + info(h[1], f0))
        f2 = convs(h[2], x + info(h[2], f1))
        expected = [hd.predictor(hd.deconv_relu(hd.deconv(f))) for hd, f in zip(h, (f0, f1, f2))]
        got = heads._all_stage_mask_logits(x)
        for t in range(3):
            torch.testing.assert_close(got[t], expected[t])
            torch.testing.assert_close(heads._stage_mask_logits(x, t), expected[t])


def test_htc_inference_averages_sigmoid_masks_with_info_flow():
    heads = sharpen(build_heads(make_cfg(HTC)))
    mask_logits = []
    for h in heads.mask_head:
        h.predictor.register_forward_hook(lambda m, i, o: mask_logits.append(o.detach().clone()))
    out = infer(heads)
    assert len(mask_logits) == 3
    classes = torch.cat([o.pred_classes for o in out])
    rows = torch.arange(len(classes))
    expected = sum(x[rows, classes].sigmoid() for x in mask_logits) / 3.0
    torch.testing.assert_close(torch.cat([o.pred_masks for o in out])[:, 0], expected)


def _spy(monkeypatch, heads, name, log):
    real = getattr(heads, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        log.append((name, args, out))
        return out

    monkeypatch.setattr(heads, name, wrapper)


@pytest.mark.parametrize("interleaved", [True, False])
def test_interleaved_mask_branch_resamples_the_refined_boxes(monkeypatch, interleaved):
    heads = build_heads(make_cfg(HTC, "MODEL.HTC.INTERLEAVED", str(interleaved)))
    log = []
    for name in ("_sample_stage", "_refine"):
        _spy(monkeypatch, heads, name, log)
    masks_seen = []
    heads.mask_pooler.register_forward_hook(lambda m, i, o: masks_seen.append([b.tensor.clone() for b in i[1]]))
    train_losses(heads)
    calls = [(name, args[-1] if name == "_sample_stage" else args[2]) for name, args, _ in log]
    if interleaved:
        # stage t: sample for the box head, refine, re-sample the refined boxes at stage t's IoU for the mask head
        assert calls == [(n, t) for t in range(3) for n in ("_sample_stage", "_refine", "_sample_stage")]
        for t in range(3):
            refine_out = log[3 * t + 1][2]
            mask_sample_in, mask_sample_out = log[3 * t + 2][1][0], log[3 * t + 2][2]
            assert mask_sample_in is refine_out
            if t < 2:
                assert log[3 * t + 3][1][0] is refine_out  # the refined boxes feed the next stage
            fg = [s.proposal_boxes.tensor[s.gt_classes < K] for s in mask_sample_out]
            for got, exp in zip(masks_seen[t], fg):
                torch.testing.assert_close(got, exp)
    else:
        assert calls == [("_sample_stage", 0), ("_refine", 0), ("_sample_stage", 1), ("_refine", 1),
                         ("_sample_stage", 2)]
        box_samples = [out for name, _, out in log if name == "_sample_stage"]
        for t in range(3):
            fg = [s.proposal_boxes.tensor[s.gt_classes < K] for s in box_samples[t]]
            for got, exp in zip(masks_seen[t], fg):
                torch.testing.assert_close(got, exp)


def test_mask_head_without_conv_res_rejects_a_previous_feature():
    from cardd_d2 import get_cardd_cfg

    head = InfoFlowMaskHead(get_cardd_cfg(), ShapeSpec(channels=8, width=14, height=14), with_conv_res=False)
    x = torch.randn(2, 8, 14, 14)
    with pytest.raises(ValueError, match="conv_res"):
        head.features(x, torch.randn(2, 256, 14, 14))
    assert head.layers(x).shape == (2, 80, 28, 28)  # detectron2 default config: 80 classes


def test_empty_batch_of_detections_gives_empty_masks():
    heads = build_heads(make_cfg(HTC))
    heads.eval()
    inst = Instances((96, 128))
    inst.pred_boxes = Boxes(torch.zeros(0, 4))
    inst.pred_classes = torch.zeros(0, dtype=torch.long)
    inst.scores = torch.zeros(0)
    with torch.no_grad():
        out = heads.forward_with_given_boxes(make_features(n=1), [inst])
    assert out[0].pred_masks.shape == (0, 1, 28, 28)
