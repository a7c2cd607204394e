"""RPN anchor assignment as mmdetection's (MaxIoUAssigner low-quality rule, allowed_border), on hand-computed cases."""
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.structures import Boxes, Instances

from cardd_d2.engine import setup_cfg
from cardd_d2.modeling.matcher import MMDetMatcher
from cardd_d2.modeling.proposal_generator import CarDDRPN

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")

# IoU of 4 ground truths (rows) with 5 anchors (columns).
IOU = torch.tensor([
    [0.80, 0.50, 0.20, 0.00, 0.10],  # g0: best anchor a0
    [0.75, 0.10, 0.05, 0.05, 0.00],  # g1: best anchor a0 too (later ground truth wins in mmdet)
    [0.00, 0.00, 0.25, 0.25, 0.00],  # g2: best IoU 0.25 < min_pos_iou 0.3 (at a2 and a3)
    [0.00, 0.45, 0.00, 0.00, 0.00],  # g3: best anchor a1 (0.45), whose own best ground truth is g0 (0.50)
])


def test_mmdet_low_quality_rule_by_hand():
    # per anchor, best IoU: a0 0.80 (g0) >= 0.7 positive; a1 0.50 (g0) ignored; a2, a3 0.25 (g2) and a4 0.10 (g0)
    # negative. mmdet then visits g0..g3: a0 -> g0, a0 -> g1 (overwrites), g2 skipped (0.25 < 0.3), a1 -> g3.
    matches, labels = MMDetMatcher([0.3, 0.7], [0, -1, 1], min_pos_iou=0.3)(IOU)
    assert labels.tolist() == [1, 1, 0, 0, 0]
    assert matches.tolist() == [1, 3, 2, 2, 0]
    # detectron2's rule, for contrast: no minimum IoU (a2, a3 positive for g2) and matches keep the anchors' argmax
    d2_matches, d2_labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(IOU)
    assert d2_labels.tolist() == [1, 1, 1, 1, 0]
    assert d2_matches.tolist() == [0, 0, 2, 2, 0]
    # no ground truth: everything negative, as detectron2
    m, lab = MMDetMatcher([0.3, 0.7], [0, -1, 1], min_pos_iou=0.3)(torch.zeros(0, 3))
    assert lab.tolist() == [0, 0, 0]


STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


def _rpn(config, *opts):
    cfg = setup_cfg(os.path.join(CONFIGS, config), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    shapes = {k: ShapeSpec(channels=8, stride=s) for k, s in STRIDES.items()}
    return PROPOSAL_GENERATOR_REGISTRY.get(cfg.MODEL.PROPOSAL_GENERATOR.NAME)(cfg, shapes)


# 100 x 100 image, one ground truth G = (0, 0, 45, 50) and three anchors:
#   A0 (-10, 0, 40, 50) crosses the left border; IoU(A0, G) = 2000 / 2750 = 0.727
#   A1 (0, 0, 30, 30) inside; IoU(A1, G) = 900 / 2250 = 0.4
#   A2 (50, 50, 90, 90) inside; IoU 0
ANCHORS = [Boxes(torch.tensor([[-10.0, 0, 40, 50], [0, 0, 30, 30], [50, 50, 90, 90]]))]
GT = Boxes(torch.tensor([[0.0, 0, 45, 50]]))


def _gt():
    inst = Instances((100, 100))
    inst.gt_boxes = GT
    return [inst]


def test_anchors_across_the_border_are_left_out_of_the_assignment():
    rpn = _rpn("CarDD/cascade_mask_rcnn_R_50_FPN.yaml")
    assert type(rpn) is CarDDRPN and rpn.anchor_boundary_thresh == 0 and isinstance(rpn.anchor_matcher, MMDetMatcher)
    (labels,), (matched,) = rpn.label_and_sample_anchors(ANCHORS, _gt())
    # A0 ignored; among the inside anchors G's best is A1 (0.4 >= 0.3): positive, matched to G; A2 negative
    assert labels.tolist() == [-1, 1, 0]
    assert torch.equal(matched[1], GT.tensor[0])
    # detectron2's RPN matches A0 (G's best, 0.727) and only then ignores it: G is left without a positive
    d2 = _rpn("CarDD/cascade_mask_rcnn_R_50_FPN.yaml", "MODEL.PROPOSAL_GENERATOR.NAME", "RPN")
    assert type(d2) is RPN
    (d2_labels,), _ = d2.label_and_sample_anchors(ANCHORS, _gt())
    assert d2_labels.tolist() == [-1, -1, 0]


def test_without_boundary_threshold_every_anchor_is_assigned():
    rpn = _rpn("CarDD/mask_rcnn_R_50_FPN.yaml")  # mmdet Mask R-CNN: allowed_border=-1
    assert rpn.anchor_boundary_thresh == -1
    (labels,), (matched,) = rpn.label_and_sample_anchors(ANCHORS, _gt())
    assert labels.tolist() == [1, -1, 0]  # A0: 0.727 >= 0.7
    assert torch.equal(matched[0], GT.tensor[0])


@pytest.mark.parametrize("name", ["mask_rcnn", "dcn", "dcn_plus", "gcnet", "cascade_mask_rcnn", "htc"])
def test_paper_configs_use_the_mmdet_assignment(name):
    for depth in (50, 101):
        cfg = setup_cfg(os.path.join(CONFIGS, f"CarDD/{name}_R_{depth}_FPN.yaml"))
        assert cfg.MODEL.PROPOSAL_GENERATOR.NAME == "CarDDRPN"
        assert (cfg.MODEL.RPN.LOW_QUALITY_MATCHES, cfg.MODEL.RPN.LOW_QUALITY_MIN_IOU) == ("mmdet", 0.3)
        assert cfg.MODEL.RPN.BOUNDARY_THRESH == (0 if name in ("cascade_mask_rcnn", "htc") else -1)
    with pytest.raises(ValueError, match="LOW_QUALITY_MATCHES"):
        _rpn("CarDD/mask_rcnn_R_50_FPN.yaml", "MODEL.RPN.LOW_QUALITY_MATCHES", "yolo")
