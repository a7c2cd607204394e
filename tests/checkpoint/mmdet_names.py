"""Test helpers: a detectron2 state dict renamed to mmdetection 2.x names (written from mmdet's module names,
independently of the converter), and release-like mmdet checkpoints built from cardd models."""
import hashlib
import re

import torch

_HEAD = [
    (r"roi_heads\.box_head\.(\d+\.)?fc(\d)\.", lambda m: f"roi_head.bbox_head.{m.group(1) or ''}shared_fcs.{int(m.group(2)) - 1}."),
    (r"roi_heads\.box_predictor\.(\d+\.)?cls_score\.", lambda m: f"roi_head.bbox_head.{m.group(1) or ''}fc_cls."),
    (r"roi_heads\.box_predictor\.(\d+\.)?bbox_pred\.", lambda m: f"roi_head.bbox_head.{m.group(1) or ''}fc_reg."),
    (r"roi_heads\.mask_head\.(\d+\.)?mask_fcn(\d)\.", lambda m: f"roi_head.mask_head.{m.group(1) or ''}convs.{int(m.group(2)) - 1}.conv."),
    (r"roi_heads\.mask_head\.(\d+\.)?deconv\.", lambda m: f"roi_head.mask_head.{m.group(1) or ''}upsample."),
    (r"roi_heads\.mask_head\.(\d+\.)?predictor\.", lambda m: f"roi_head.mask_head.{m.group(1) or ''}conv_logits."),
    (r"roi_heads\.mask_head\.(\d+\.)conv_res\.", lambda m: f"roi_head.mask_head.{m.group(1)}conv_res.conv."),
    (r"roi_heads\.semantic_head\.((lateral_convs|convs)\.\d+|conv_embedding)\.", lambda m: f"roi_head.semantic_head.{m.group(1)}.conv."),
    (r"roi_heads\.semantic_head\.conv_logits\.", lambda m: "roi_head.semantic_head.conv_logits."),
    (r"proposal_generator\.rpn_head\.conv\.", lambda m: "rpn_head.rpn_conv."),
    (r"proposal_generator\.rpn_head\.objectness_logits\.", lambda m: "rpn_head.rpn_cls."),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.", lambda m: "rpn_head.rpn_reg."),
    (r"backbone\.fpn_lateral(\d)\.", lambda m: f"neck.lateral_convs.{int(m.group(1)) - 2}.conv."),
    (r"backbone\.fpn_output(\d)\.", lambda m: f"neck.fpn_convs.{int(m.group(1)) - 2}.conv."),
    (r"backbone\.bottom_up\.stem\.conv1\.norm\.", lambda m: "backbone.bn1."),
    (r"backbone\.bottom_up\.stem\.conv1\.", lambda m: "backbone.conv1."),
]
_BLOCK = [
    (r"conv(\d)\.norm\.", lambda m: f"bn{m.group(1)}."),
    (r"shortcut\.norm\.", lambda m: "downsample.1."),
    (r"shortcut\.", lambda m: "downsample.0."),
    (r"conv2_offset\.", lambda m: "conv2.conv_offset."),
    (r"(conv\d|context_block)\.", lambda m: m.group(0)),
]


def mmdet_name(d2_key: str) -> str:
    m = re.match(r"backbone\.bottom_up\.res(\d)\.(\d+)\.(.*)$", d2_key)
    if m:
        rest = m.group(3)
        for pattern, repl in _BLOCK:
            mm = re.match(pattern, rest)
            if mm:
                return f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.{repl(mm)}{rest[mm.end():]}"
    for pattern, repl in _HEAD:
        mm = re.match(pattern, d2_key)
        if mm:
            return repl(mm) + d2_key[mm.end():]
    raise KeyError(f"no mmdet name for {d2_key}")


def to_mmdet_checkpoint(model) -> dict:
    """``{"meta": ..., "state_dict": ...}`` with mmdet names (+ BN ``num_batches_tracked``) from a cardd model."""
    sd = {}
    for k, v in model.state_dict().items():
        if k in ("pixel_mean", "pixel_std"):
            continue
        n = mmdet_name(k)
        sd[n] = v.detach().clone()
        if n.endswith("running_var"):
            sd[n.replace("running_var", "num_batches_tracked")] = torch.tensor(1000)
    return {"meta": {"mmdet_version": "2.25.2", "CLASSES": ("a",) * 80}, "state_dict": sd}


def sha256_prefix(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:8]
