"""mmdet -> detectron2 conversion of Cascade Mask R-CNN and HTC ROI-head keys (rule tables in
cardd_d2.checkpoint.mmdet_heads)."""
import pytest
import torch

from cardd_d2.checkpoint import MmdetConversionError, convert_mmdet_state_dict
from cardd_d2.checkpoint import detect_heads
from test_cascade_mmdet import CASCADE, HTC, K, _event_storage, build_heads, make_cfg  # noqa: F401


def expected_pairs(num_convs=2, htc=False):
    """mmdet 2.x key -> detectron2 key, written out by hand from mmdet's module names."""
    pairs = {}
    for t in range(3):
        for x in ("weight", "bias"):
            pairs[f"roi_head.bbox_head.{t}.shared_fcs.0.{x}"] = f"roi_heads.box_head.{t}.fc1.{x}"
            pairs[f"roi_head.bbox_head.{t}.shared_fcs.1.{x}"] = f"roi_heads.box_head.{t}.fc2.{x}"
            pairs[f"roi_head.bbox_head.{t}.fc_cls.{x}"] = f"roi_heads.box_predictor.{t}.cls_score.{x}"
            pairs[f"roi_head.bbox_head.{t}.fc_reg.{x}"] = f"roi_heads.box_predictor.{t}.bbox_pred.{x}"
            for i in range(num_convs):
                pairs[f"roi_head.mask_head.{t}.convs.{i}.conv.{x}"] = f"roi_heads.mask_head.{t}.mask_fcn{i + 1}.{x}"
            pairs[f"roi_head.mask_head.{t}.upsample.{x}"] = f"roi_heads.mask_head.{t}.deconv.{x}"
            pairs[f"roi_head.mask_head.{t}.conv_logits.{x}"] = f"roi_heads.mask_head.{t}.predictor.{x}"
            if htc and t > 0:
                pairs[f"roi_head.mask_head.{t}.conv_res.conv.{x}"] = f"roi_heads.mask_head.{t}.conv_res.{x}"
    return pairs


def fake_mmdet(heads, pairs, seed=0):
    """An mmdet-named state dict with random tensors shaped like ``heads``' parameters."""
    g = torch.Generator().manual_seed(seed)
    own = heads.state_dict()
    return {m: torch.randn(own[d[len("roi_heads."):]].shape, generator=g) for m, d in pairs.items()}


@pytest.mark.parametrize("config,htc", [(CASCADE, False), (HTC, True)])
def test_converted_heads_load_exactly(config, htc):
    heads = build_heads(make_cfg(config))
    pairs = expected_pairs(htc=htc)
    assert len(pairs) == len(heads.state_dict())  # every parameter of the heads is covered
    sd = fake_mmdet(heads, pairs)
    assert detect_heads(sd) == ("htc" if htc else "cascade_mask_rcnn")
    res = convert_mmdet_state_dict(sd)
    assert res.mapping == pairs
    overrides = dict(res.overrides)
    assert overrides["MODEL.ROI_HEADS.NAME"] == ("HTCROIHeads" if htc else "MMDetCascadeROIHeads")
    assert overrides["MODEL.ROI_HEADS.NUM_CLASSES"] == K
    if htc:
        assert overrides["MODEL.HTC.MASK_INFO_FLOW"] is True
    heads.load_state_dict({k[len("roi_heads."):]: v for k, v in res.model.items()}, strict=True)
    for m, d in pairs.items():
        torch.testing.assert_close(heads.state_dict()[d[len("roi_heads."):]], sd[m])


def test_drop_heads_removes_every_stage_predictor():
    heads = build_heads(make_cfg(HTC))
    sd = fake_mmdet(heads, expected_pairs(htc=True))
    res = convert_mmdet_state_dict(sd, drop_heads=True)
    assert sorted(res.dropped) == sorted(
        f"roi_head.{h}.{t}.{n}.{x}" for t in range(3) for x in ("weight", "bias")
        for h, n in (("bbox_head", "fc_cls"), ("bbox_head", "fc_reg"), ("mask_head", "conv_logits")))
    result = heads.load_state_dict({k[len("roi_heads."):]: v for k, v in res.model.items()}, strict=False)
    assert not result.unexpected_keys and len(result.missing_keys) == 18
    with pytest.raises(MmdetConversionError, match="num_classes"):
        convert_mmdet_state_dict(sd, num_classes=3)


def test_htc_semantic_head_maps_or_is_ignored():
    # semantic-head keys map onto HTCROIHeads.semantic_head (exact load: tests/modeling/test_htc_semantic.py);
    # for HTC without the semantic branch they are dropped with ignore=
    heads = build_heads(make_cfg(HTC))
    sd = fake_mmdet(heads, expected_pairs(htc=True))
    sd["roi_head.semantic_head.conv_logits.weight"] = torch.zeros(183, 256, 1, 1)
    sd["roi_head.semantic_head.bn.weight"] = torch.zeros(256)  # not a FusedSemanticHead key
    assert detect_heads(sd) == "htc"
    with pytest.raises(MmdetConversionError, match="semantic_head.bn.weight"):
        convert_mmdet_state_dict(sd)
    res = convert_mmdet_state_dict(sd, ignore=[r"roi_head\.semantic_head\..*"])
    assert not any("semantic" in k for k in res.model)


def test_class_specific_cascade_regression_is_rejected():
    heads = build_heads(make_cfg(CASCADE))
    sd = fake_mmdet(heads, expected_pairs())
    sd["roi_head.bbox_head.1.fc_reg.weight"] = torch.zeros(4 * K, 32)
    with pytest.raises(MmdetConversionError, match="class-agnostic"):
        convert_mmdet_state_dict(sd)
