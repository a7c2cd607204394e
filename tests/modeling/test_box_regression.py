"""MMDetBox2BoxTransform decodes like mmdetection's DeltaXYWHBBoxCoder: log-size deltas clamped on both sides."""
import math

import torch
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform

from cardd_d2.modeling.box_regression import MMDetBox2BoxTransform

BOX = torch.tensor([[0.0, 0.0, 125.0, 125.0]])


def test_shrinking_deltas_stop_at_one_62_5th_of_the_box():
    # dw = dh = -10 (weights 1): mmdetection keeps exp(-log(1000/16)) = 1/62.5 of the size: 2 px around the centre
    out = MMDetBox2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)).apply_deltas(torch.tensor([[0.0, 0.0, -10.0, -10.0]]), BOX)
    torch.testing.assert_close(out, torch.tensor([[61.5, 61.5, 63.5, 63.5]]))
    d2 = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)).apply_deltas(torch.tensor([[0.0, 0.0, -10.0, -10.0]]), BOX)
    assert (d2[0, 2] - d2[0, 0]).item() < 0.01  # detectron2's own transform: a near-zero box


def test_weights_scale_the_bound_and_other_deltas_decode_as_detectron2():
    w = (10.0, 10.0, 5.0, 5.0)
    deltas = torch.tensor([[1.0, -2.0, -30.0, 0.5], [0.3, 0.1, 2.0, -1.0], [0.0, 0.0, 50.0, 50.0]])
    boxes = torch.tensor([[10.0, 20.0, 60.0, 80.0], [5.0, 5.0, 25.0, 45.0], [0.0, 0.0, 10.0, 10.0]])
    ours = MMDetBox2BoxTransform(weights=w).apply_deltas(deltas, boxes)
    ref = Box2BoxTransform(weights=w).apply_deltas(deltas, boxes)
    torch.testing.assert_close(ours[1:], ref[1:])  # within the bounds and above the upper bound: identical
    width = (ours[0, 2] - ours[0, 0]).item()
    assert math.isclose(width, 50.0 * 16 / 1000, rel_tol=1e-5)  # -30 / 5 = -6 < -log(62.5): clamped
    torch.testing.assert_close(ours[0, [1, 3]], ref[0, [1, 3]])  # y unaffected


def test_cardd_configs_decode_rpn_and_roi_boxes_like_mmdetection(tiny_cfg):
    cfg = tiny_cfg("CarDD/mask_rcnn_R_50_FPN.yaml", "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "16",
                   "MODEL.ROI_MASK_HEAD.CONV_DIM", "8", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
                   "MODEL.RESNETS.WIDTH_PER_GROUP", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32")
    model = build_model(cfg)
    assert type(model.proposal_generator.box2box_transform) is MMDetBox2BoxTransform
    assert type(model.roi_heads.box_predictor.box2box_transform) is MMDetBox2BoxTransform
