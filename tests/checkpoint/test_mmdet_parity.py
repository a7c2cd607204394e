"""cardd reproduces the released mmdetection 2.25.2 models: stage by stage, detections and ROI losses.

Each fixture was computed by the authors' released code (tools/parity/make_mmdet_fixtures.py) from a reduced-width
model with random weights. The weights go through cardd's converter into the cardd config of the same architecture;
every stage must agree to 1e-5 of the reference's magnitude (1e-4 for the "sampling" deformable-conv backend).
"""
import numpy as np
import pytest
import torch
from detectron2.layers.mask_ops import _do_paste_mask
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from cardd_d2.modeling.roi_heads import MMDetCascadeROIHeads
from mmdet_parity_helpers import ARCHS, CONFIGS, assert_close, build_cardd_model, load_fixture

TOL = 1e-5
SAMPLING_TOL = 1e-4
DEFORM_ARCHS = [a for a in ARCHS if a in ("dcn", "dcn_plus")]
# mmdet loss names -> detectron2's
LOSS_NAMES = {"loss_cls": "loss_cls", "loss_bbox": "loss_box_reg", "loss_mask": "loss_mask"}

_MODELS = {}


def cardd_model(arch, backend="torchvision"):
    """One model per (architecture, deformable backend), built on first use."""
    key = (arch, backend)
    if key not in _MODELS:
        _MODELS[key] = build_cardd_model(arch, "MODEL.RESNETS.DEFORM_BACKEND", backend)[0]
    return _MODELS[key]


def batched_inputs(fx):
    img = fx.t("input/img")
    return [{"image": im, "height": im.shape[1], "width": im.shape[2]} for im in img]


@torch.no_grad()
def features(model, fx):
    images = model.preprocess_image(batched_inputs(fx))
    bottom_up = model.backbone.bottom_up(images.tensor)
    return images, bottom_up, model.backbone(images.tensor)


def test_fixtures_cover_the_six_released_architectures():
    assert sorted(ARCHS) == sorted(CONFIGS)
    for arch in ARCHS:
        meta = load_fixture(arch).meta
        assert meta["arch"] == arch and meta["versions"]["mmdet"] == "2.25.2", meta


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_checkpoint_loads_strictly(arch):
    model, cfg = build_cardd_model(arch)  # load_state_dict(strict=True) inside
    fx = load_fixture(arch)
    n_mmdet = sum(1 for k in fx.keys("sd/") if not k.endswith("num_batches_tracked"))
    assert len(model.state_dict()) == n_mmdet


@pytest.mark.parametrize("arch", ARCHS)
def test_test_settings_equal_the_release(arch):
    """RPN and ROI test-time settings of the shipped config are the released config's."""
    _, cfg = build_cardd_model(arch)
    rel = load_fixture(arch).meta["test_cfg"]
    assert cfg.MODEL.RPN.PRE_NMS_TOPK_TEST == rel["rpn"]["nms_pre"]
    assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST == rel["rpn"]["max_per_img"]
    assert cfg.MODEL.RPN.NMS_THRESH == rel["rpn"]["nms"]["iou_threshold"]
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == rel["rcnn"]["score_thr"]
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == rel["rcnn"]["nms"]["iou_threshold"]
    assert cfg.TEST.DETECTIONS_PER_IMAGE == rel["rcnn"]["max_per_img"]


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_and_fpn(arch):
    fx = load_fixture(arch)
    _, c, p = features(cardd_model(arch), fx)
    for i in (2, 3, 4, 5):
        assert_close(c[f"res{i}"], fx.t(f"out/c{i}"), TOL, f"{arch} C{i}")
    for i in (2, 3, 4, 5, 6):
        assert_close(p[f"p{i}"], fx.t(f"out/p{i}"), TOL, f"{arch} P{i}")


@pytest.mark.parametrize("arch", DEFORM_ARCHS)
def test_backbone_and_fpn_sampling_backend(arch):
    fx = load_fixture(arch)
    _, c, p = features(cardd_model(arch, "sampling"), fx)
    for i in (2, 3, 4, 5):
        assert_close(c[f"res{i}"], fx.t(f"out/c{i}"), SAMPLING_TOL, f"{arch} C{i} (sampling)")
    for i in (2, 3, 4, 5, 6):
        assert_close(p[f"p{i}"], fx.t(f"out/p{i}"), SAMPLING_TOL, f"{arch} P{i} (sampling)")


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_rpn_head_and_proposals(arch):
    fx = load_fixture(arch)
    model = cardd_model(arch)
    images, _, p = features(model, fx)
    rpn = model.proposal_generator
    logits, deltas = rpn.rpn_head([p[f] for f in rpn.in_features])
    for lvl, (lg, dl) in enumerate(zip(logits, deltas)):
        assert_close(lg, fx.t(f"out/rpn_cls_l{lvl}"), TOL, f"{arch} RPN objectness level {lvl}")
        assert_close(dl, fx.t(f"out/rpn_reg_l{lvl}"), TOL, f"{arch} RPN deltas level {lvl}")
    proposals, _ = rpn(images, p)
    for b, prop in enumerate(proposals):
        ref = fx.t(f"out/proposals_{b}")
        assert len(prop) == len(ref), f"{arch} image {b}: {len(prop)} proposals, mmdet {len(ref)}"
        assert_close(prop.proposal_boxes.tensor, ref[:, :4], TOL, f"{arch} proposals image {b}")
        assert_close(prop.objectness_logits.sigmoid(), ref[:, 4], TOL, f"{arch} proposal scores image {b}")


def _stage_logits(model, p, boxes):
    """(cls logits, box deltas, mask logits) of every ROI stage on the same boxes."""
    rh = model.roi_heads
    box_feats = rh.box_pooler([p[f] for f in rh.box_in_features], boxes)
    mask_feats = rh.mask_pooler([p[f] for f in rh.mask_in_features], boxes)
    if isinstance(rh, MMDetCascadeROIHeads):
        out = []
        for s in range(rh.num_cascade_stages):
            cls, reg = rh.box_predictor[s](rh.box_head[s](box_feats))
            out.append((cls, reg, rh._stage_mask_logits(mask_feats, s)))
        return out
    cls, reg = rh.box_predictor(rh.box_head(box_feats))
    return [(cls, reg, rh.mask_head.layers(mask_feats))]


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_roi_heads_on_fixed_boxes(arch):
    fx = load_fixture(arch)
    model = cardd_model(arch)
    _, _, p = features(model, fx)
    rois = fx.t("roi/rois")
    boxes = [Boxes(rois[rois[:, 0] == b, 1:]) for b in range(len(fx.t("input/img")))]
    stages = _stage_logits(model, p, boxes)
    assert len(stages) == len(fx.keys("roi/s")) // 3, f"{arch}: stage count"
    for s, (cls, reg, mask) in enumerate(stages):
        assert_close(cls, fx.t(f"roi/s{s}_cls"), TOL, f"{arch} stage {s} class logits")
        assert_close(reg, fx.t(f"roi/s{s}_reg"), TOL, f"{arch} stage {s} box deltas")
        assert_close(mask, fx.t(f"roi/s{s}_mask"), TOL, f"{arch} stage {s} mask logits")


def _by_class_then_score(labels, scores):
    return np.lexsort((-scores, labels))


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_final_detections(arch):
    fx = load_fixture(arch)
    model = cardd_model(arch)
    h, w = fx.meta["image_size"]
    raw = model.inference(batched_inputs(fx), do_postprocess=False)
    for b, r in enumerate(raw):
        inst = detector_postprocess(r, h, w)
        labels, scores = inst.pred_classes.numpy(), inst.scores.numpy()
        ref_labels, ref_scores = fx.arrays[f"det/{b}_labels"], fx.arrays[f"det/{b}_scores"]
        assert len(inst) == len(ref_labels), f"{arch} image {b}: {len(inst)} detections, mmdet {len(ref_labels)}"
        order, ref_order = _by_class_then_score(labels, scores), _by_class_then_score(ref_labels, ref_scores)
        np.testing.assert_array_equal(labels[order], ref_labels[ref_order], err_msg=f"{arch} image {b} classes")
        assert_close(torch.from_numpy(scores[order]), torch.from_numpy(ref_scores[ref_order]), TOL,
                     f"{arch} image {b} scores")
        assert_close(inst.pred_boxes.tensor[order], torch.from_numpy(fx.arrays[f"det/{b}_boxes"][ref_order]),
                     TOL, f"{arch} image {b} boxes")
        ref_masks = np.unpackbits(fx.arrays[f"det/{b}_masks"], axis=-1, count=w).astype(bool)[ref_order]
        masks = inst.pred_masks.numpy()[order]
        # a pixel may only differ where the mask probability is within the tolerance of the 0.5 threshold
        soft, _ = _do_paste_mask(r.pred_masks, r.pred_boxes.tensor, h, w, skip_empty=False)
        near = (soft.numpy()[order] - 0.5).__abs__() <= TOL
        differ = masks != ref_masks
        assert not (differ & ~near).any(), (
            f"{arch} image {b}: {int((differ & ~near).sum())} of {masks.size} mask pixels differ away from the "
            "threshold")


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_rpn_anchor_assignment(arch):
    """Every anchor gets the released RPN's training label and ground truth (before sampling): IoU thresholds,
    low-quality matches, and anchors outside the border (Cascade / HTC) left out."""
    fx = load_fixture(arch)
    model = cardd_model(arch)
    _, _, p = features(model, fx)
    rpn = model.proposal_generator
    anchors = rpn.anchor_generator([p[f] for f in rpn.in_features])
    _, targets = _training_inputs(fx)
    rpn._subsample_labels = lambda labels: labels  # this instance only: compare the assignment, not the sampling
    try:
        labels, matched = rpn.label_and_sample_anchors(anchors, targets)
    finally:
        del rpn._subsample_labels
    for b, (lab, box) in enumerate(zip(labels, matched)):
        gt_inds = fx.t(f"rpn_assign/{b}_gt_inds").long()
        ref = torch.where(gt_inds > 0, 1, gt_inds)
        assert len(lab) == len(ref), f"{arch} image {b}: {len(lab)} anchors, mmdet {len(ref)}"
        wrong = (lab != ref).nonzero().flatten().tolist()
        assert not wrong, (f"{arch} image {b}: {len(wrong)} anchors labelled differently, e.g. anchor {wrong[0]}: "
                           f"cardd {lab[wrong[0]].item()}, mmdet {ref[wrong[0]].item()}")
        pos = gt_inds > 0
        assert torch.equal(box[pos], targets[b].gt_boxes.tensor[gt_inds[pos] - 1]), f"{arch} image {b}: matched boxes"


def _training_inputs(fx):
    n = len(fx.t("input/img"))
    h, w = fx.meta["image_size"]
    proposals, targets = [], []
    for b in range(n):
        prop = Instances((h, w))
        prop.proposal_boxes = Boxes(fx.t(f"train/proposals_{b}"))
        prop.objectness_logits = torch.zeros(len(prop))
        proposals.append(prop)
        tgt = Instances((h, w))
        tgt.gt_boxes = Boxes(fx.t(f"train/gt_boxes_{b}"))
        tgt.gt_classes = fx.t(f"train/gt_labels_{b}").long()
        tgt.gt_masks = BitMasks(fx.t(f"train/gt_masks_{b}").bool())
        targets.append(tgt)
    return proposals, targets


def _cardd_loss_name(mmdet_name):
    if mmdet_name.startswith("s") and "." in mmdet_name:  # cascade / HTC: "s{t}.loss_x"
        stage, name = mmdet_name.split(".", 1)
        return f"{LOSS_NAMES[name]}_stage{stage[1:]}"
    return LOSS_NAMES[mmdet_name]


@pytest.mark.parametrize("arch", ARCHS)
def test_roi_losses_on_fixed_proposals(arch):
    """The same proposals and targets (few enough that both samplers keep all of them) give the same losses."""
    fx = load_fixture(arch)
    model = cardd_model(arch)
    with torch.no_grad():
        images, _, p = features(model, fx)
    proposals, targets = _training_inputs(fx)
    rh = model.roi_heads
    rh.train()
    try:
        with EventStorage(0), torch.no_grad():
            _, losses = rh(images, p, proposals, targets)
    finally:
        rh.eval()
    ref = {k[5:]: fx.t(k) for k in fx.keys("loss/") if "acc" not in k}
    assert ref, f"{arch}: fixture has no losses"
    got = {_cardd_loss_name(k): losses.get(_cardd_loss_name(k)) for k in ref}
    missing = [k for k, v in got.items() if v is None]
    assert not missing, f"{arch}: cardd computed no {missing}; it has {sorted(losses)}"
    for k, v in ref.items():
        assert_close(got[_cardd_loss_name(k)].reshape(()), v.reshape(()), TOL, f"{arch} {k}")
