"""mmdet 2.x -> detectron2 checkpoint conversion: names, shapes, loadability and identical outputs."""
import re

import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import cardd_d2
from cardd_d2.checkpoint import MmdetConversionError, convert_mmdet_checkpoint, convert_mmdet_state_dict

import importlib.util
import os

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "convert_mmdet_to_d2.py")


def _tool():
    spec = importlib.util.spec_from_file_location("convert_mmdet_to_d2", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _base_cfg(num_classes=80, narrow=True):
    cfg = cardd_d2.get_cardd_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    if narrow:  # R-50 layout (3, 4, 6, 3 blocks) with narrow channels: same key names, fast
        cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
        cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
        cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # keep random-weight detections so outputs can be compared
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    return cfg


def _mmdet_style_cfg(dcn_gc: bool, num_classes=80, narrow=True):
    """What an mmdet Mask R-CNN R-50 FPN (optionally DCN c3-c5 + GCNet c3-c5) is in detectron2 terms."""
    cfg = _base_cfg(num_classes, narrow)
    cfg.MODEL.BACKBONE.NAME = "build_cardd_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    if dcn_gc:
        cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
        cfg.MODEL.RESNETS.GC_ON_PER_STAGE = [False, True, True, True]
    return cfg


def _randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(r.abs() + 0.5)
            elif name.endswith("norm.weight"):
                t.copy_(1 + 0.1 * r)
            elif "conv2_offset" in name or "context_block" in name:
                t.copy_(0.05 * r)  # non-zero: offsets and context terms change the outputs
            elif "bbox_pred" in name or "anchor_deltas" in name:
                t.copy_(0.01 * r)  # small box deltas keep random-weight detections non-degenerate
            else:
                t.copy_(r * (2.0 / max(1, t[0].numel())) ** 0.5)
    return model


def d2_to_mmdet(sd):
    """Independent inverse of the converter's mapping (detectron2 names -> mmdet 2.x names), + mmdet's BN
    num_batches_tracked buffers."""
    out = {}
    for k, v in sd.items():
        n = k
        n = re.sub(r"^backbone\.bottom_up\.stem\.conv1\.norm\.", "backbone.bn1.", n)
        n = re.sub(r"^backbone\.bottom_up\.stem\.conv1\.", "backbone.conv1.", n)
        m = re.match(r"^backbone\.bottom_up\.res(\d)\.(\d+)\.(.*)$", n)
        if m:
            rest = m.group(3)
            rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", rest)
            rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
            rest = re.sub(r"^shortcut\.weight", "downsample.0.weight", rest)
            rest = re.sub(r"^conv2_offset\.", "conv2.conv_offset.", rest)
            n = f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.{rest}"
        m = re.match(r"^backbone\.fpn_(lateral|output)(\d)\.(.*)$", n)
        if m:
            kind = "lateral_convs" if m.group(1) == "lateral" else "fpn_convs"
            n = f"neck.{kind}.{int(m.group(2)) - 2}.conv.{m.group(3)}"
        for a, b in (
            ("proposal_generator.rpn_head.conv.", "rpn_head.rpn_conv."),
            ("proposal_generator.rpn_head.objectness_logits.", "rpn_head.rpn_cls."),
            ("proposal_generator.rpn_head.anchor_deltas.", "rpn_head.rpn_reg."),
            ("roi_heads.box_head.fc1.", "roi_head.bbox_head.shared_fcs.0."),
            ("roi_heads.box_head.fc2.", "roi_head.bbox_head.shared_fcs.1."),
            ("roi_heads.box_predictor.cls_score.", "roi_head.bbox_head.fc_cls."),
            ("roi_heads.box_predictor.bbox_pred.", "roi_head.bbox_head.fc_reg."),
            ("roi_heads.mask_head.deconv.", "roi_head.mask_head.upsample."),
            ("roi_heads.mask_head.predictor.", "roi_head.mask_head.conv_logits."),
        ):
            if n.startswith(a):
                n = b + n[len(a):]
        m = re.match(r"^roi_heads\.mask_head\.mask_fcn(\d)\.(.*)$", n)
        if m:
            n = f"roi_head.mask_head.convs.{int(m.group(1)) - 1}.conv.{m.group(2)}"
        assert n != k, f"test inverse mapping misses {k}"
        out[n] = v.clone()
        if n.endswith("running_var"):
            out[n.replace("running_var", "num_batches_tracked")] = torch.tensor(1000)
    return out


# Real mmdet 2.x key names and shapes (Mask R-CNN R-50 FPN, COCO, with DCN c3-c5 and GCNet r4 c3-c5).
REAL_MMDET_KEYS = {
    "backbone.conv1.weight": ((64, 3, 7, 7), "backbone.bottom_up.stem.conv1.weight"),
    "backbone.bn1.running_var": ((64,), "backbone.bottom_up.stem.conv1.norm.running_var"),
    "backbone.layer1.0.downsample.0.weight": ((256, 64, 1, 1), "backbone.bottom_up.res2.0.shortcut.weight"),
    "backbone.layer1.0.downsample.1.bias": ((256,), "backbone.bottom_up.res2.0.shortcut.norm.bias"),
    "backbone.layer2.0.conv2.weight": ((128, 128, 3, 3), "backbone.bottom_up.res3.0.conv2.weight"),
    "backbone.layer2.0.conv2.conv_offset.weight": ((18, 128, 3, 3), "backbone.bottom_up.res3.0.conv2_offset.weight"),
    "backbone.layer3.5.bn2.running_mean": ((256,), "backbone.bottom_up.res4.5.conv2.norm.running_mean"),
    "backbone.layer3.0.context_block.conv_mask.weight": (
        (1, 1024, 1, 1), "backbone.bottom_up.res4.0.context_block.conv_mask.weight"),
    "backbone.layer3.0.context_block.channel_add_conv.1.weight": (
        (256, 1, 1), "backbone.bottom_up.res4.0.context_block.channel_add_conv.1.weight"),
    "backbone.layer4.2.context_block.channel_add_conv.3.weight": (
        (2048, 512, 1, 1), "backbone.bottom_up.res5.2.context_block.channel_add_conv.3.weight"),
    "backbone.layer4.2.bn3.weight": ((2048,), "backbone.bottom_up.res5.2.conv3.norm.weight"),
    "neck.lateral_convs.0.conv.weight": ((256, 256, 1, 1), "backbone.fpn_lateral2.weight"),
    "neck.lateral_convs.3.conv.weight": ((256, 2048, 1, 1), "backbone.fpn_lateral5.weight"),
    "neck.fpn_convs.3.conv.bias": ((256,), "backbone.fpn_output5.bias"),
    "rpn_head.rpn_conv.weight": ((256, 256, 3, 3), "proposal_generator.rpn_head.conv.weight"),
    "rpn_head.rpn_cls.weight": ((3, 256, 1, 1), "proposal_generator.rpn_head.objectness_logits.weight"),
    "rpn_head.rpn_reg.weight": ((12, 256, 1, 1), "proposal_generator.rpn_head.anchor_deltas.weight"),
    "roi_head.bbox_head.shared_fcs.0.weight": ((1024, 12544), "roi_heads.box_head.fc1.weight"),
    "roi_head.bbox_head.shared_fcs.1.bias": ((1024,), "roi_heads.box_head.fc2.bias"),
    "roi_head.bbox_head.fc_cls.weight": ((81, 1024), "roi_heads.box_predictor.cls_score.weight"),
    "roi_head.bbox_head.fc_reg.weight": ((320, 1024), "roi_heads.box_predictor.bbox_pred.weight"),
    "roi_head.mask_head.convs.3.conv.weight": ((256, 256, 3, 3), "roi_heads.mask_head.mask_fcn4.weight"),
    "roi_head.mask_head.upsample.weight": ((256, 256, 2, 2), "roi_heads.mask_head.deconv.weight"),
    "roi_head.mask_head.conv_logits.weight": ((80, 256, 1, 1), "roi_heads.mask_head.predictor.weight"),
}


@pytest.fixture(scope="module")
def dcn_gc_reference():
    torch.manual_seed(0)
    cfg = _mmdet_style_cfg(dcn_gc=True)
    model = _randomize(build_model(cfg), seed=1).eval()
    return cfg, model


def _inputs():
    g = torch.Generator().manual_seed(5)
    return [{"image": torch.rand(3, 64, 64, generator=g) * 255, "height": 64, "width": 64}]


def _assert_same_outputs(a, b):
    inp = _inputs()
    with torch.no_grad():
        oa, ob = a(inp)[0]["instances"], b(inp)[0]["instances"]
        fa = a.backbone(a.preprocess_image(inp).tensor)
        fb = b.backbone(b.preprocess_image(inp).tensor)
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k])
    assert len(oa) > 0 and len(oa) == len(ob)
    torch.testing.assert_close(oa.pred_boxes.tensor, ob.pred_boxes.tensor)
    torch.testing.assert_close(oa.scores, ob.scores)
    assert torch.equal(oa.pred_classes, ob.pred_classes)
    assert torch.equal(oa.pred_masks, ob.pred_masks)


def test_real_mmdet_key_names_map_to_model_keys():
    d2 = build_model(_mmdet_style_cfg(dcn_gc=True, narrow=False)).state_dict()  # real R-50 widths
    sd = d2_to_mmdet(d2)
    for key, (shape, want) in REAL_MMDET_KEYS.items():
        assert key in sd, f"test inverse does not produce the real mmdet key {key}"
        assert tuple(sd[key].shape) == shape, key
    result = convert_mmdet_state_dict(sd)
    for key, (shape, want) in REAL_MMDET_KEYS.items():
        assert result.mapping[key] == want
        assert tuple(d2[want].shape) == shape
    assert not any(k.endswith("num_batches_tracked") for k in result.model)


def test_dcn_gc_roundtrip_loads_exactly_and_reproduces_outputs(tmp_path, dcn_gc_reference):
    cfg, ref = dcn_gc_reference
    sd = d2_to_mmdet(ref.state_dict())
    src = tmp_path / "mmdet.pth"
    torch.save({"meta": {"CLASSES": ["a"] * 80, "mmdet_version": "2.25.2"}, "state_dict": sd}, src)
    dst = tmp_path / "d2.pth"
    result = convert_mmdet_checkpoint(str(src), str(dst), num_classes=80)

    ov = dict(result.overrides)
    assert ov["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert ov["MODEL.RESNETS.DEPTH"] == 50
    assert ov["MODEL.RESNETS.DEFORM_ON_PER_STAGE"] == [False, True, True, True]
    assert ov["MODEL.RESNETS.DEFORM_MODULATED"] is False and ov["MODEL.RESNETS.DEFORM_NUM_GROUPS"] == 1
    assert ov["MODEL.RESNETS.GC_ON_PER_STAGE"] == [False, True, True, True]
    assert ov["MODEL.RESNETS.GC_RATIO"] == 0.25
    assert ov["INPUT.FORMAT"] == "RGB" and ov["MODEL.ROI_HEADS.NUM_CLASSES"] == 80

    saved = torch.load(dst, weights_only=True)
    assert saved["__author__"] == "cardd-convert-mmdet" and saved["matching_heuristics"] is False

    cfg2 = _base_cfg()  # narrow widths are not mmdet facts; everything else comes from the overrides
    cfg2.merge_from_list(result.overrides_as_opts())  # the printed opts rebuild the same architecture
    torch.manual_seed(123)
    fresh = build_model(cfg2).eval()
    incompatible = fresh.load_state_dict(saved["model"], strict=False)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    fresh = build_model(cfg2).eval()
    DetectionCheckpointer(fresh).load(str(dst))
    _assert_same_outputs(ref, fresh)


def test_plain_mask_rcnn_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = _mmdet_style_cfg(dcn_gc=False, num_classes=6)
    ref = _randomize(build_model(cfg), seed=2).eval()
    src = tmp_path / "plain.pth"
    torch.save(d2_to_mmdet(ref.state_dict()), src)  # a raw state dict also converts
    dst = tmp_path / "plain_d2.pth"
    assert _tool().main([str(src), str(dst), "--num-classes", "6"]) == 0
    result = convert_mmdet_checkpoint(str(src), str(dst), num_classes=6)
    ov = dict(result.overrides)
    assert ov["MODEL.RESNETS.DEFORM_ON_PER_STAGE"] == [False] * 4 and "MODEL.RESNETS.DEFORM_MODULATED" not in ov
    fresh = build_model(cfg).eval()
    DetectionCheckpointer(fresh).load(str(dst))
    _assert_same_outputs(ref, fresh)


def test_class_count_mismatch_and_drop_heads(tmp_path, dcn_gc_reference, capsys):
    _, ref = dcn_gc_reference
    sd = d2_to_mmdet(ref.state_dict())
    with pytest.raises(MmdetConversionError, match=r"80 classes.*num_classes is 6.*drop"):
        convert_mmdet_state_dict(sd, num_classes=6)
    src = tmp_path / "coco.pth"
    torch.save({"state_dict": sd}, src)
    assert _tool().main([str(src), str(tmp_path / "x.pth"), "--num-classes", "6"]) == 2
    assert "--drop-heads" in capsys.readouterr().err

    dst = tmp_path / "cardd.pth"
    assert _tool().main([str(src), str(dst), "--num-classes", "6", "--drop-heads"]) == 0
    out = capsys.readouterr().out
    assert "MODEL.RESNETS.STRIDE_IN_1X1" in out and "MODEL.ROI_HEADS.NUM_CLASSES: 6" in out
    cfg6 = _mmdet_style_cfg(dcn_gc=True, num_classes=6)
    model6 = build_model(cfg6)
    saved = torch.load(dst, weights_only=True)["model"]
    incompatible = model6.load_state_dict(saved, strict=False)
    assert not incompatible.unexpected_keys
    assert sorted(incompatible.missing_keys) == sorted(
        f"{p}.{x}"
        for p in ("roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
                  "roi_heads.mask_head.predictor")
        for x in ("weight", "bias")
    )


def test_unknown_keys_are_listed(tmp_path, dcn_gc_reference):
    _, ref = dcn_gc_reference
    sd = d2_to_mmdet(ref.state_dict())
    sd["roi_head.semantic_head.conv_embedding.conv.weight"] = torch.zeros(1)
    sd["backbone.layer1.0.weird.weight"] = torch.zeros(1)
    with pytest.raises(MmdetConversionError, match=r"2 mmdet key\(s\)[\s\S]*backbone\.layer1\.0\.weird\.weight"):
        convert_mmdet_state_dict(sd, source="ckpt.pth")
    result = convert_mmdet_state_dict(sd, ignore=[r"roi_head\.semantic_head\..*", r".*\.weird\..*"])
    assert "backbone.bottom_up.res2.0.conv1.weight" in result.model


def test_bad_files_raise_with_the_file_name(tmp_path):
    with pytest.raises(MmdetConversionError, match="missing.pth"):
        convert_mmdet_checkpoint(str(tmp_path / "missing.pth"), str(tmp_path / "o.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(MmdetConversionError, match="bad.pth"):
        convert_mmdet_checkpoint(str(bad), str(tmp_path / "o.pth"))


def test_partial_stage_dcn_and_ambiguous_offsets_rejected(dcn_gc_reference):
    _, ref = dcn_gc_reference
    sd = d2_to_mmdet(ref.state_dict())
    partial = {k: v for k, v in sd.items() if not k.startswith("backbone.layer3.2.conv2.conv_offset")}
    with pytest.raises(MmdetConversionError, match="layer3 has DCN in 5 of 6 blocks"):
        convert_mmdet_state_dict(partial)
    wide = dict(sd)
    for k in [k for k in sd if "conv_offset" in k]:
        wide[k] = torch.cat([sd[k]] * 3, 0)  # 54 channels: DCNv1 x3 groups or DCNv2 x2 groups
    with pytest.raises(MmdetConversionError, match="ambiguous"):
        convert_mmdet_state_dict(wide)
    info = convert_mmdet_state_dict(wide, deform_modulated=True).info
    assert info["deform_modulated"] is True and info["deform_num_groups"] == 2


def _heads_sd(stages, cls_rows, reg_rows, logit_rows, mask=True):
    """ROI-head predictor tensors with the given output rows; ``stages`` None = Mask R-CNN names."""
    sd = {}
    for t in ([None] if stages is None else range(stages)):
        s = "" if t is None else f"{t}."
        sd[f"roi_head.bbox_head.{s}fc_cls.weight"] = torch.zeros(cls_rows[t or 0], 8)
        sd[f"roi_head.bbox_head.{s}fc_reg.weight"] = torch.zeros(reg_rows[t or 0], 8)
        if mask:
            sd[f"roi_head.mask_head.{s}conv_logits.weight"] = torch.zeros(logit_rows[t or 0], 8, 1, 1)
    return sd


def test_one_class_count_reader_for_every_head_family():
    from cardd_d2.checkpoint import HEAD_FAMILIES
    from cardd_d2.checkpoint.mmdet_heads import read_head_facts

    mask_rcnn, cascade = HEAD_FAMILIES["mask_rcnn"], HEAD_FAMILIES["cascade_mask_rcnn"]
    # 6 classes: 7 logits, 24 class-specific box rows, 6 mask logits
    assert read_head_facts(_heads_sd(None, [7], [24], [6]), mask_rcnn) == {
        "num_classes": 6, "cls_agnostic_bbox_reg": None, "cls_agnostic_mask": None, "mask_on": None}
    # class-agnostic box and mask layers, three stages
    facts = read_head_facts(_heads_sd(3, [7] * 3, [4] * 3, [1] * 3), cascade)
    assert (facts["num_classes"], facts["cls_agnostic_bbox_reg"], facts["cls_agnostic_mask"]) == (6, True, True)
    # no mask head: a Faster R-CNN, in either family
    assert read_head_facts(_heads_sd(None, [7], [4], None, mask=False), mask_rcnn)["mask_on"] is False
    assert read_head_facts(_heads_sd(3, [7] * 3, [4] * 3, None, mask=False), cascade)["mask_on"] is False
    # inconsistencies name the key
    with pytest.raises(MmdetConversionError, match=r"roi_head\.bbox_head\.2\.fc_cls\.weight has 5 classes"):
        read_head_facts(_heads_sd(3, [7, 7, 6], [4] * 3, [6] * 3), cascade)
    with pytest.raises(MmdetConversionError, match=r"roi_head\.bbox_head\.fc_reg\.weight has 20 rows"):
        read_head_facts(_heads_sd(None, [7], [20], [6]), mask_rcnn)
    with pytest.raises(MmdetConversionError, match=r"roi_head\.mask_head\.1\.conv_logits\.weight has 5 classes"):
        read_head_facts(_heads_sd(3, [7] * 3, [4] * 3, [6, 5, 6]), cascade)
    # the overrides come from these facts, in one place
    ov = dict(convert_mmdet_state_dict(_heads_sd(3, [7] * 3, [4] * 3, [6] * 3)).overrides)
    assert ov["MODEL.ROI_HEADS.NAME"] == "MMDetCascadeROIHeads" and ov["MODEL.ROI_HEADS.NUM_CLASSES"] == 6
    assert ov["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"] is True and "MODEL.MASK_ON" not in ov


def test_conversion_rules_are_plain_tables_in_the_checkpoint_package():
    import cardd_d2.checkpoint as ckpt

    assert list(ckpt.HEAD_FAMILIES) == ["mask_rcnn", "cascade_mask_rcnn", "htc"]
    assert not hasattr(ckpt, "register_head_rules")
    assert all(f.__module__ == "cardd_d2.checkpoint.mmdet_heads" for f in (ckpt.HeadFamily, ckpt.detect_heads))
