"""FocalFastRCNNOutputLayers and the registered ROI heads: only the training classification loss changes."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances

from cardd_d2 import get_cardd_cfg
from cardd_d2.modeling.losses import roi_cls_loss
from cardd_d2.modeling.roi_heads import CarDDStandardROIHeads, FocalFastRCNNOutputLayers

K = 6


@pytest.fixture(autouse=True)
def _event_storage():
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        yield


def _cfg(*opts):
    cfg = get_cardd_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = K
    cfg.merge_from_list(list(opts))
    return cfg


def _proposals(n_per_image=(5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in n_per_image:
        inst = Instances((64, 64))
        xy = torch.rand(n, 2, generator=g) * 30
        inst.proposal_boxes = Boxes(torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 20], 1))
        inst.gt_boxes = Boxes(inst.proposal_boxes.tensor + 1.0)
        inst.gt_classes = torch.randint(0, K + 1, (n,), generator=g)  # K = background
        out.append(inst)
    if n_per_image[0]:
        out[0].gt_classes[0] = K  # at least one background ROI
    return out


def _pair(*opts):
    """A focal predictor and a detectron2 predictor with identical weights."""
    torch.manual_seed(0)
    focal = FocalFastRCNNOutputLayers(_cfg(*opts), ShapeSpec(channels=16))
    base = FastRCNNOutputLayers(_cfg(*opts), ShapeSpec(channels=16))
    base.load_state_dict(focal.state_dict())
    return focal, base


@pytest.mark.parametrize("variant,alpha,gamma", [("mmdet_sigmoid", 0.5, 2.0), ("softmax", 0.25, 1.0)])
def test_focal_predictor_replaces_only_loss_cls(variant, alpha, gamma):
    focal, base = _pair(
        "MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "focal",
        "MODEL.ROI_BOX_HEAD.FOCAL_VARIANT", variant,
        "MODEL.ROI_BOX_HEAD.FOCAL_ALPHA", alpha,
        "MODEL.ROI_BOX_HEAD.FOCAL_GAMMA", gamma,
    )
    assert (focal.cls_loss_type, focal.focal_variant, focal.focal_alpha, focal.focal_gamma) == (
        "focal", variant, alpha, gamma)
    x = torch.randn(8, 16)
    props = _proposals()
    preds = focal(x)
    got = focal.losses(preds, props)
    ref = base.losses(base(x), props)
    gt = torch.cat([p.gt_classes for p in props])
    assert set(got) == set(ref) == {"loss_cls", "loss_box_reg"}
    torch.testing.assert_close(got["loss_box_reg"], ref["loss_box_reg"])
    torch.testing.assert_close(got["loss_cls"], roi_cls_loss(preds[0], gt, "focal", variant, alpha, gamma))
    assert not torch.allclose(got["loss_cls"], ref["loss_cls"])
    got["loss_cls"].backward()
    assert focal.cls_score.weight.grad.abs().sum() > 0


def test_ce_predictor_equals_detectron2():
    focal, base = _pair()  # CLS_LOSS_TYPE defaults to "ce"
    x, props = torch.randn(8, 16), _proposals()
    got, ref = focal.losses(focal(x), props), base.losses(base(x), props)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])


def test_loss_weight_applies_to_focal_loss():
    focal, _ = _pair("MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "focal", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT", 1.0)
    x, props = torch.randn(8, 16), _proposals()
    one = focal.losses(focal(x), props)["loss_cls"]
    focal.loss_weight = {"loss_cls": 3.0, "loss_box_reg": 1.0}
    torch.testing.assert_close(focal.losses(focal(x), props)["loss_cls"], 3.0 * one)


def test_empty_proposals_give_zero_loss_with_grad():
    focal, _ = _pair("MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "focal")
    x = torch.randn(0, 16)
    losses = focal.losses(focal(x), _proposals((0, 0)))
    assert losses["loss_cls"].item() == 0.0 and losses["loss_cls"].requires_grad


@pytest.mark.parametrize("variant", ["mmdet_sigmoid", "softmax"])
def test_inference_scores_stay_softmax(variant):
    focal, base = _pair("MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "focal", "MODEL.ROI_BOX_HEAD.FOCAL_VARIANT", variant)
    focal.eval(), base.eval()
    x, props = torch.randn(8, 16), _proposals()
    preds = focal(x)
    probs = torch.cat(focal.predict_probs(preds, props))
    torch.testing.assert_close(probs, F.softmax(preds[0], dim=-1))
    torch.testing.assert_close(probs, torch.cat(base.predict_probs(base(x), props)))
    inst_f, _ = focal.inference(preds, props)
    inst_b, _ = base.inference(base(x), props)
    for a, b in zip(inst_f, inst_b):
        torch.testing.assert_close(a.scores, b.scores)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="CLS_LOSS_TYPE"):
        FocalFastRCNNOutputLayers(_cfg("MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "hinge"), ShapeSpec(channels=4))
    with pytest.raises(ValueError, match="FOCAL_VARIANT"):
        FocalFastRCNNOutputLayers(_cfg("MODEL.ROI_BOX_HEAD.FOCAL_VARIANT", "x"), ShapeSpec(channels=4))
    with pytest.raises(ValueError, match="USE_SIGMOID_CE"):
        FocalFastRCNNOutputLayers(
            _cfg("MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", "focal", "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True),
            ShapeSpec(channels=4),
        )


def _fpn_shapes():
    return {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 6)}


@pytest.mark.parametrize(
    "name,loss_type,expected",
    [("CarDDStandardROIHeads", "ce", "ce"), ("CarDDStandardROIHeads", "focal", "focal")],
)
def test_registered_roi_heads_pick_the_loss(name, loss_type, expected):
    cfg = _cfg("MODEL.ROI_HEADS.NAME", name, "MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE", loss_type,
               "MODEL.ROI_BOX_HEAD.FOCAL_ALPHA", 0.25, "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
               "MODEL.MASK_ON", True, "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
               "MODEL.ROI_BOX_HEAD.NUM_FC", 1, "MODEL.ROI_BOX_HEAD.FC_DIM", 16,
               "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead", "MODEL.ROI_MASK_HEAD.NUM_CONV", 1,
               "MODEL.ROI_MASK_HEAD.CONV_DIM", 8)
    heads = ROI_HEADS_REGISTRY.get(name)(cfg, _fpn_shapes())
    assert isinstance(heads, CarDDStandardROIHeads)
    assert isinstance(heads.box_predictor, FocalFastRCNNOutputLayers)
    assert heads.box_predictor.cls_loss_type == expected
    assert heads.box_predictor.focal_alpha == 0.25
    assert heads.mask_on
    assert "DCNPlusROIHeads" not in ROI_HEADS_REGISTRY  # one head; DCN+ is CLS_LOSS_TYPE "focal"
