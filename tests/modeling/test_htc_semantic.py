"""HTC's semantic branch (FusedSemanticHead + semantic feature fusion + HTCRCNN feeding the stuff maps).

ROI-head tests run on random FPN-like features (fast); a few tests build the tiny full model (R-50-FPN, 128 px).
Stuff maps are made up here: labels from the pixel position, with ignored (255) patches.
"""
import logging
import math
import os
import uuid

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage
from torchvision.ops import roi_align

from cardd_d2.modeling.roi_heads import HTCROIHeads
from cardd_d2.modeling.meta_arch import HTCRCNN, ImageListWithSemSeg
from cardd_d2.modeling.roi_heads.htc_semantic import FusedSemanticHead, SemanticFusionPooler
from test_cascade_mmdet import (  # noqa: F401  (_event_storage is an autouse fixture)
    CH,
    HTC,
    IMG_H,
    IMG_W,
    _event_storage,
    make_cfg,
    make_proposals,
    make_targets,
    sharpen,
)

SEMANTIC = "CarDD/htc_semantic_R_50_FPN.yaml"
NUM_STUFF = 5
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
SMALL_SEMANTIC = ["MODEL.HTC.SEMANTIC_NUM_CLASSES", str(NUM_STUFF), "MODEL.HTC.SEMANTIC_CONV_DIM", "8"]


def semantic_cfg(*opts):
    return make_cfg(SEMANTIC, *SMALL_SEMANTIC, *opts)


def build_heads(cfg, seed=0):
    torch.manual_seed(seed)
    return build_roi_heads(cfg, {k: ShapeSpec(channels=CH, stride=s) for k, s in STRIDES.items()})


def make_features(seed=1, n=2):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(n, CH, math.ceil(IMG_H / s), math.ceil(IMG_W / s), generator=g) for k, s in STRIDES.items()
    }


def make_stuff(h, w, n=2, ignore_box=(0, 0, 24, 40)):
    """[n, h, w] labels in 0..NUM_STUFF-1 from the position (different per image) with a 255 patch."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    maps = []
    for i in range(n):
        m = ((ys // 8 + 2 * (xs // 16) + i) % NUM_STUFF).long()
        y0, x0, y1, x1 = ignore_box
        m[y0 + 8 * i:y1 + 8 * i, x0:x1] = 255
        maps.append(m)
    return torch.stack(maps)


def make_images(n=2):
    return ImageListWithSemSeg(torch.zeros(n, 3, IMG_H, IMG_W), [(IMG_H, IMG_W)] * n, make_stuff(IMG_H, IMG_W, n))


def train_losses(heads, seed=5, images=None):
    heads.train()
    targets = make_targets()
    torch.manual_seed(seed)  # the samplers draw from torch's global generator
    images = images if images is not None else make_images()
    _, losses = heads(images, make_features(), make_proposals(targets), targets)
    return losses


def infer(heads):
    heads.eval()
    with torch.no_grad():
        out, _ = heads(None, make_features(), make_proposals(make_targets()))
    return out


def mmdet_semantic_loss(logits, stuff, weight):
    """Hand-computed: labels of every 8th pixel (nearest 1/8), CE summed over non-ignored pixels / ALL pixels."""
    target = stuff[:, ::8, ::8]
    assert target.shape[-2:] == logits.shape[-2:]
    logp = torch.log_softmax(logits.double(), dim=1)
    keep = target != 255
    picked = logp.permute(0, 2, 3, 1)[keep, :].gather(1, target[keep][:, None])
    return -picked.sum() / target.numel() * weight


# --------------------------------------------------------------------------------------------------- structure
def test_structure_and_mmdet_analogous_parameter_names():
    heads = build_heads(semantic_cfg())
    assert isinstance(heads, HTCROIHeads) and heads.with_semantic
    sem = heads.semantic_head
    assert isinstance(sem, FusedSemanticHead)
    assert sem.in_features == ["p2", "p3", "p4", "p5", "p6"] and sem.fusion_level == "p3" and sem.fusion_stride == 8
    assert len(sem.lateral_convs) == 5 and len(sem.convs) == 4
    assert all(c.kernel_size == (1, 1) and c.out_channels == CH for c in sem.lateral_convs)
    assert all(c.kernel_size == (3, 3) and isinstance(c.activation, torch.nn.ReLU) for c in sem.convs)
    assert sem.conv_embedding.kernel_size == (1, 1) and sem.conv_embedding.out_channels == CH
    assert sem.conv_logits.out_channels == NUM_STUFF and sem.conv_logits.activation is None
    names = set(heads.state_dict())
    for key in ("lateral_convs.4", "convs.3", "conv_embedding", "conv_logits"):
        assert f"semantic_head.{key}.weight" in names and f"semantic_head.{key}.bias" in names
    for pooler, size in ((heads.box_pooler, 7), (heads.mask_pooler, 14)):
        assert isinstance(pooler, SemanticFusionPooler) and pooler.output_size == (size, size)
        assert pooler.semantic_pooler.output_size == (14, 14)
        assert [lp.spatial_scale for lp in pooler.semantic_pooler.level_poolers] == [1 / 8]
    # the released CarDD HTC has no semantic branch
    plain = build_heads(make_cfg(HTC))
    assert not plain.with_semantic and not any("semantic" in k for k in plain.state_dict())
    only_box = build_heads(semantic_cfg("MODEL.HTC.SEMANTIC_FUSION", "('bbox',)"))
    assert isinstance(only_box.box_pooler, SemanticFusionPooler)
    assert not isinstance(only_box.mask_pooler, SemanticFusionPooler)


def test_bad_semantic_settings_are_refused():
    with pytest.raises(ValueError, match="SEMANTIC_FUSION"):
        build_heads(semantic_cfg("MODEL.HTC.SEMANTIC_FUSION", "('bbox', 'segm')"))
    with pytest.raises(ValueError, match="SEMANTIC_FUSION_LEVEL"):
        build_heads(semantic_cfg("MODEL.HTC.SEMANTIC_FUSION_LEVEL", "p7"))
    with pytest.raises(ValueError, match="SEMANTIC_IGNORE_VALUE"):
        build_heads(semantic_cfg("MODEL.HTC.SEMANTIC_IGNORE_VALUE", "3"))


# --------------------------------------------------------------------------------------------------- head and loss
def test_head_fuses_levels_at_stride_8_like_mmdet():
    heads = build_heads(semantic_cfg())
    sem = heads.semantic_head
    feats = make_features()
    logits, emb = sem(feats)
    assert logits.shape == (2, NUM_STUFF, IMG_H // 8, IMG_W // 8) and emb.shape == (2, CH, IMG_H // 8, IMG_W // 8)
    with torch.no_grad():
        size = feats["p3"].shape[-2:]
        x = sum(
            torch.relu(F.conv2d(
                F.interpolate(feats[k], size=size, mode="bilinear", align_corners=True), conv.weight, conv.bias
            ))
            for k, conv in zip(STRIDES, sem.lateral_convs)
        )
        for conv in sem.convs:
            x = torch.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
        torch.testing.assert_close(logits, F.conv2d(x, sem.conv_logits.weight, sem.conv_logits.bias))
        torch.testing.assert_close(emb, torch.relu(F.conv2d(x, sem.conv_embedding.weight, sem.conv_embedding.bias)))


@pytest.mark.parametrize("weight", [0.2, 0.5])
def test_semantic_loss_is_the_weighted_cross_entropy(weight):
    heads = build_heads(semantic_cfg("MODEL.HTC.SEMANTIC_LOSS_WEIGHT", str(weight)))
    seen = []
    heads.semantic_head.conv_logits.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    images = make_images()
    losses = train_losses(heads, images=images)
    assert len(seen) == 1
    expected = mmdet_semantic_loss(seen[0], images.sem_seg, weight)
    assert expected > 0
    torch.testing.assert_close(losses["loss_semantic_seg"].double(), expected)
    # every other loss is the HTC's own
    assert set(losses) - {"loss_semantic_seg"} == set(train_losses(build_heads(make_cfg(HTC))))


def test_semantic_loss_rejects_labels_outside_the_classes():
    heads = build_heads(semantic_cfg())
    images = make_images()
    images.sem_seg[0, 5, 5] = NUM_STUFF
    with pytest.raises(ValueError, match="SEMANTIC_NUM_CLASSES"):
        train_losses(heads, images=images)


def test_gradients_reach_the_semantic_head():
    heads = build_heads(semantic_cfg())
    losses = train_losses(heads)
    losses["loss_semantic_seg"].backward()
    sem = heads.semantic_head
    for m in (*sem.lateral_convs, *sem.convs, sem.conv_logits):
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    assert sem.conv_embedding.weight.grad is None  # the segmentation loss does not use the embedding
    # the box and mask losses reach the semantic head through the fused ROI features
    for key in ("loss_cls_stage1", "loss_mask_stage2"):
        heads.zero_grad(set_to_none=True)
        losses = train_losses(heads)
        losses[key].backward()
        for m in (sem.conv_embedding, sem.convs[0], sem.lateral_convs[0]):
            assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0, key
        assert sem.conv_logits.weight.grad is None


# --------------------------------------------------------------------------------------------------- fusion
def test_fusion_pooler_adds_roi_aligned_semantic_feature():
    heads = build_heads(semantic_cfg())
    feats = make_features()
    _, emb = heads.semantic_head(feats)
    boxes = [
        Boxes(torch.tensor([[8.0, 10.0, 50.0, 60.0], [30.5, 4.0, 120.0, 90.0]])),
        Boxes(torch.tensor([[1.0, 2.0, 40.0, 30.0]])),
    ]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b.tensor], 1) for i, b in enumerate(boxes)])
    sem14 = roi_align(emb, rois, (14, 14), spatial_scale=1 / 8, sampling_ratio=0, aligned=True)
    fpn = [feats[k] for k in ("p2", "p3", "p4", "p5")]
    for pooler, expected_sem in ((heads.box_pooler, F.avg_pool2d(sem14, 2)), (heads.mask_pooler, sem14)):
        pooler.semantic_feat = emb
        try:
            got = pooler(fpn, boxes)
        finally:
            pooler.semantic_feat = None
        torch.testing.assert_close(got, pooler.pooler(fpn, boxes) + expected_sem)
    with pytest.raises(RuntimeError, match="semantic feature"):
        heads.box_pooler(fpn, boxes)


def test_semantic_feature_changes_box_and_mask_outputs():
    sem = sharpen(build_heads(semantic_cfg()))
    plain = build_heads(make_cfg(HTC))
    result = plain.load_state_dict(sem.state_dict(), strict=False)
    assert not result.missing_keys and all(k.startswith("semantic_head.") for k in result.unexpected_keys)
    fused, ref = infer(sem), infer(plain)
    assert all(p.semantic_feat is None for p in (sem.box_pooler, sem.mask_pooler))  # cleared after forward
    assert not torch.allclose(torch.cat([o.scores for o in fused]), torch.cat([o.scores for o in ref]))
    # masks on the same boxes: run the mask branch of both on the plain model's detections
    with torch.no_grad():
        masks_fused = sem.forward_with_given_boxes(make_features(), [Instances(o.image_size, **{
            k: v for k, v in o.get_fields().items() if k != "pred_masks"}) for o in ref])
    assert not torch.allclose(torch.cat([o.pred_masks for o in masks_fused]), torch.cat([o.pred_masks for o in ref]))
    # a zero semantic feature (zero embedding conv) gives the model without the semantic branch
    with torch.no_grad():
        sem.semantic_head.conv_embedding.weight.zero_()
        sem.semantic_head.conv_embedding.bias.zero_()
    for a, b in zip(infer(sem), ref):
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        torch.testing.assert_close(a.scores, b.scores)
        torch.testing.assert_close(a.pred_masks, b.pred_masks)


def test_training_without_stuff_maps_in_the_images_is_refused():
    heads = build_heads(semantic_cfg())
    heads.train()
    targets = make_targets()
    with pytest.raises(ValueError, match="sem_seg.*HTCRCNN"):
        heads(None, make_features(), make_proposals(targets), targets)


# --------------------------------------------------------------------------------------------------- full model
def _model_inputs(n=2, h=120, w=150, with_stuff=True, seed=0):
    """Images whose size is not a multiple of 32 (the stuff maps are padded with the images)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 70.0, 80.0], [60.0, 40.0, 140.0, 110.0]]))
        inst.gt_classes = torch.tensor([i % 6, (i + 2) % 6])
        inst.gt_masks = PolygonMasks([[[10, 12, 70, 12, 10, 80]], [[60, 40, 140, 110, 60, 110]]])
        d = {"image": torch.randint(0, 255, (3, h, w), generator=g).float(), "instances": inst, "height": h,
             "width": w, "file_name": f"synthetic_{i}.jpg"}
        if with_stuff:
            d["sem_seg"] = make_stuff(h, w, n=1)[0]
        out.append(d)
    return out


def _model(tiny_cfg, *opts):
    cfg = tiny_cfg(SEMANTIC, "MODEL.HTC.SEMANTIC_NUM_CLASSES", str(NUM_STUFF), "MODEL.ROI_HEADS.NUM_CLASSES", "6",
                   *opts)
    torch.manual_seed(0)
    return build_model(cfg)


def test_model_pads_stuff_maps_like_the_images(tiny_cfg):
    model = _model(tiny_cfg)
    assert isinstance(model, HTCRCNN) and type(model).__module__ == "cardd_d2.modeling.meta_arch.htc_rcnn"
    model.train()
    inputs = _model_inputs()
    images = model.preprocess_image(inputs)
    assert isinstance(images, ImageListWithSemSeg)
    assert images.sem_seg.shape == (2,) + tuple(images.tensor.shape[-2:]) == (2, 128, 160)
    assert torch.equal(images.sem_seg[:, :120, :150], torch.stack([x["sem_seg"] for x in inputs]))
    assert (images.sem_seg[:, 120:] == 255).all() and (images.sem_seg[:, :, 150:] == 255).all()
    model.eval()
    assert not isinstance(model.preprocess_image(inputs), ImageListWithSemSeg)  # stuff maps: training only


def test_model_trains_and_infers(tiny_cfg):
    model = _model(tiny_cfg, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    before = model.roi_heads.semantic_head.conv_logits.weight.detach().clone()
    with EventStorage(0):
        for it in range(2):
            losses = model(_model_inputs(seed=it))
            assert "loss_semantic_seg" in losses and "loss_mask_stage2" in losses and "loss_rpn_cls" in losses
            assert all(torch.isfinite(v) for v in losses.values())
            opt.zero_grad()
            sum(losses.values()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # random-init R-50: huge first losses
            opt.step()
    assert not torch.equal(model.roi_heads.semantic_head.conv_logits.weight, before)
    model.eval()
    inputs = _model_inputs(with_stuff=False)  # inference needs no stuff maps
    with torch.no_grad():
        out = model(inputs)
    assert len(out) == 2
    for o in out:
        inst = o["instances"]
        assert inst.image_size == (120, 150) and inst.pred_masks.shape == (len(inst), 120, 150)
    # GeneralizedRCNN.inference with given boxes calls forward_with_given_boxes: the semantic feature is computed there
    given = []
    for x in inputs:
        inst = Instances((120, 150))
        inst.pred_boxes = x["instances"].gt_boxes.clone()
        inst.pred_classes = x["instances"].gt_classes.clone()
        inst.scores = torch.ones(len(inst))
        given.append(inst)
    seen = []
    model.roi_heads.semantic_head.conv_embedding.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        out = model.inference(inputs, detected_instances=given)
    assert len(seen) == 1
    for o in out:
        assert o["instances"].pred_masks.shape == (2, 120, 150)


def test_missing_stuff_maps_give_a_clear_error(tiny_cfg):
    model = _model(tiny_cfg, "DATASETS.TRAIN", "('cardd_train',)")
    model.train()
    inputs = _model_inputs()
    del inputs[1]["sem_seg"]
    with EventStorage(0), pytest.raises(ValueError) as err:
        model(inputs)
    msg = str(err.value)
    for part in ("synthetic_1.jpg", "no stuff maps", "cardd_train", "CarDD has none", "MODEL.HTC.WITH_SEMANTIC False"):
        assert part in msg


def test_plain_meta_architecture_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match="HTCRCNN"):
        _model(tiny_cfg, "MODEL.META_ARCHITECTURE", "GeneralizedRCNN")


def test_dataset_mapper_stuff_maps_reach_the_model(tiny_cfg, synthetic_cardd, tmp_path):
    """detectron2's DatasetMapper reads 'sem_seg_file_name'; CarDD dicts (no stuff maps) stop with the clear error."""
    from cardd_d2.data import register_coco_damage

    name = f"cardd_htc_semantic_{uuid.uuid4().hex[:8]}"
    register_coco_damage(name, synthetic_cardd["json"]["train"], synthetic_cardd["image_dirs"]["train"])
    try:
        cfg = tiny_cfg(SEMANTIC, "MODEL.HTC.SEMANTIC_NUM_CLASSES", str(NUM_STUFF), "MODEL.ROI_HEADS.NUM_CLASSES", "6",
                       "DATASETS.TRAIN", f"('{name}',)")
        cardd_dicts = DatasetCatalog.get(name)[:2]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    dicts = [dict(d) for d in cardd_dicts]
    for i, d in enumerate(dicts):
        path = os.path.join(str(tmp_path), f"stuff_{i}.png")
        assert cv2.imwrite(path, make_stuff(d["height"], d["width"], n=1)[0].numpy().astype(np.uint8))
        d["sem_seg_file_name"] = path
    mapper = DatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in dicts]
    for x in batch:
        assert x["sem_seg"].dtype == torch.long and x["sem_seg"].shape == x["image"].shape[-2:]
        assert set(x["sem_seg"].unique().tolist()) <= set(range(NUM_STUFF)) | {255}
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        losses = model(batch)
        assert torch.isfinite(losses["loss_semantic_seg"]) and losses["loss_semantic_seg"] > 0
        cardd_batch = [mapper(dict(d)) for d in cardd_dicts]
        assert "sem_seg" not in cardd_batch[0]
        with pytest.raises(ValueError, match=f"{name}.*no stuff maps"):
            model(cardd_batch)


# --------------------------------------------------------------------------------------------------- conversion
def test_mmdet_semantic_head_keys_convert_and_load_exactly():
    from cardd_d2.checkpoint import convert_mmdet_state_dict
    from test_cascade_convert import expected_pairs, fake_mmdet

    heads = build_heads(semantic_cfg())
    pairs = expected_pairs(htc=True)
    src, dst = "roi_head.semantic_head.", "roi_heads.semantic_head."
    for x in ("weight", "bias"):  # mmdet FusedSemanticHead names, written out by hand
        for i in range(5):
            pairs[f"{src}lateral_convs.{i}.conv.{x}"] = f"{dst}lateral_convs.{i}.{x}"
        for i in range(4):
            pairs[f"{src}convs.{i}.conv.{x}"] = f"{dst}convs.{i}.{x}"
        pairs[f"{src}conv_embedding.conv.{x}"] = f"{dst}conv_embedding.{x}"
        pairs[f"{src}conv_logits.{x}"] = f"{dst}conv_logits.{x}"
    assert len(pairs) == len(heads.state_dict())
    sd = fake_mmdet(heads, pairs)
    res = convert_mmdet_state_dict(sd)
    assert res.mapping == pairs
    heads.load_state_dict({k[len("roi_heads."):]: v for k, v in res.model.items()}, strict=True)
    torch.testing.assert_close(heads.semantic_head.lateral_convs[4].weight, sd[f"{src}lateral_convs.4.conv.weight"])
    # drop_heads drops the detector's class layers, not the stuff-class logits
    dropped = convert_mmdet_state_dict(sd, drop_heads=True)
    assert "roi_heads.semantic_head.conv_logits.weight" in dropped.model


def test_release_htc_checkpoint_with_semantic_head_loads_strictly_without_the_branch(caplog):
    # The released COCO HTC checkpoints carry a FusedSemanticHead; CarDD's HTC has no semantic branch. Converting such
    # a checkpoint and loading it must not leave unexpected keys: the 22 semantic-head tensors are dropped on load.
    from cardd_d2.checkpoint import convert_mmdet_state_dict
    from test_cascade_convert import expected_pairs, fake_mmdet

    with_semantic = build_heads(semantic_cfg())
    src, dst = "roi_head.semantic_head.", "roi_heads.semantic_head."
    pairs = expected_pairs(htc=True)
    for x in ("weight", "bias"):
        for i in range(5):
            pairs[f"{src}lateral_convs.{i}.conv.{x}"] = f"{dst}lateral_convs.{i}.{x}"
        for i in range(4):
            pairs[f"{src}convs.{i}.conv.{x}"] = f"{dst}convs.{i}.{x}"
        pairs[f"{src}conv_embedding.conv.{x}"] = f"{dst}conv_embedding.{x}"
        pairs[f"{src}conv_logits.{x}"] = f"{dst}conv_logits.{x}"
    converted = convert_mmdet_state_dict(fake_mmdet(with_semantic, pairs)).model
    assert sum(k.startswith(dst) for k in converted) == 22

    plain = build_heads(make_cfg(HTC))  # configs/CarDD/htc_R_50_FPN.yaml: MODEL.HTC.WITH_SEMANTIC False
    assert not plain.with_semantic
    with caplog.at_level(logging.INFO, logger="cardd_d2.modeling.roi_heads.htc"):
        plain.load_state_dict({k[len("roi_heads."):]: v for k, v in converted.items()}, strict=True)
    assert f"dropped the checkpoint's semantic head ({NUM_STUFF} stuff classes), 22 tensors" in caplog.text
    torch.testing.assert_close(plain.box_predictor[2].cls_score.weight,
                               converted["roi_heads.box_predictor.2.cls_score.weight"])
    # the model with the branch keeps every tensor
    with_semantic.load_state_dict({k[len("roi_heads."):]: v for k, v in converted.items()}, strict=True)


def test_htc_tests_with_the_released_score_threshold():
    from cardd_d2.engine import setup_cfg
    from tiny_config import config_path

    for config in ("CarDD/htc_R_50_FPN.yaml", "CarDD/htc_R_101_FPN.yaml", SEMANTIC):
        assert setup_cfg(config_path(config)).MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.001
    assert setup_cfg(config_path("CarDD/cascade_mask_rcnn_R_50_FPN.yaml")).MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.05
