"""Deformable / GCNet ResNet backbones built through detectron2's ResNet machinery."""
import pytest
import torch
from detectron2 import model_zoo
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone import resnet as d2_resnet

import cardd_d2
from cardd_d2.modeling.backbone.resnet import CarDDBottleneckBlock
from cardd_d2.modeling.layers import ContextBlock, DeformConv, ModulatedDeformConv, has_detectron2_C

FPN_YAML = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
C4_YAML = "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml"


def _cfg(yaml=FPN_YAML, name="build_cardd_resnet_fpn_backbone", **resnets):
    cfg = cardd_d2.get_cardd_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(yaml))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = name
    for k, v in resnets.items():
        if k == "FREEZE_AT":
            cfg.MODEL.BACKBONE.FREEZE_AT = v
        else:
            setattr(cfg.MODEL.RESNETS, k, v)
    return cfg


def _blocks(backbone, stage):
    bottom_up = getattr(backbone, "bottom_up", backbone)
    return list(getattr(bottom_up, stage).children())


def test_dcn_and_gc_blocks_structure():
    cfg = _cfg(DEFORM_ON_PER_STAGE=[False, True, True, True], GC_ON_PER_STAGE=[False, True, True, True])
    bb = build_backbone(cfg)
    assert all(type(b) is d2_resnet.BottleneckBlock for b in _blocks(bb, "res2"))
    for stage, width in (("res3", 128), ("res4", 256), ("res5", 512)):
        for b in _blocks(bb, stage):
            assert isinstance(b, CarDDBottleneckBlock)
            assert isinstance(b.conv2, DeformConv) and b.conv2.in_channels == width
            assert b.conv2_offset.out_channels == 18 and b.conv2_offset.kernel_size == (3, 3)
            assert b.conv2_offset.stride == b.conv2.stride
            assert torch.count_nonzero(b.conv2_offset.weight) == 0
            assert torch.count_nonzero(b.conv2_offset.bias) == 0
            assert isinstance(b.context_block, ContextBlock) and b.context_block.planes == width  # out_channels (4*width) * 1/4
    sd = bb.state_dict()
    assert "bottom_up.res3.0.conv2_offset.weight" in sd
    for name in ("conv_mask.weight", "channel_add_conv.0.weight", "channel_add_conv.1.weight",
                 "channel_add_conv.3.weight", "channel_add_conv.3.bias"):
        assert f"bottom_up.res5.2.context_block.{name}" in sd
    assert not any("res2" in k and ("offset" in k or "context" in k) for k in sd)


def test_modulated_and_groups_offset_channels():
    cfg = _cfg(DEFORM_ON_PER_STAGE=[False, False, False, True], DEFORM_MODULATED=True, DEFORM_NUM_GROUPS=2)
    b = _blocks(build_backbone(cfg), "res5")[0]
    assert isinstance(b.conv2, ModulatedDeformConv) and b.conv2.deformable_groups == 2
    assert b.conv2_offset.out_channels == 27 * 2


@pytest.mark.parametrize("modulated", [False, True])
def test_same_as_detectron2_deform_block(monkeypatch, modulated):
    """detectron2's own DeformBottleneckBlock (made constructible by lending it our conv) and ours agree on
    parameter names, shapes and outputs for non-zero offsets."""
    monkeypatch.setattr(d2_resnet, "DeformConv", DeformConv)
    monkeypatch.setattr(d2_resnet, "ModulatedDeformConv", ModulatedDeformConv)
    torch.manual_seed(0)
    kw = dict(bottleneck_channels=8, stride=2, norm="BN", deform_modulated=modulated, deform_num_groups=2)
    ref = d2_resnet.DeformBottleneckBlock(16, 32, **kw).eval()
    ours = CarDDBottleneckBlock(16, 32, deform_on=True, deform_backend="torchvision", **kw).eval()
    ref_sd = ref.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref_sd.items()}
    with torch.no_grad():
        for t in ref_sd.values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.3)  # includes the offset conv: offsets are non-zero
        for k, t in ref_sd.items():
            if k.endswith("running_var"):
                t.abs_().add_(0.5)
    ours.load_state_dict(ref_sd)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_plain_checkpoint_loads_and_zero_init_is_identity():
    torch.manual_seed(0)
    plain = build_backbone(_cfg(name="build_resnet_fpn_backbone")).eval()
    cfg = _cfg(DEFORM_ON_PER_STAGE=[True, True, True, True], GC_ON_PER_STAGE=[False, True, True, True])
    ours = build_backbone(cfg).eval()
    result = ours.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys
    assert all(".conv2_offset." in k or ".context_block." in k for k in result.missing_keys)
    assert any(".context_block." in k for k in result.missing_keys)
    assert sum(".conv2_offset.weight" in k for k in result.missing_keys) == 3 + 4 + 6 + 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(x), ours(x)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_freeze_at_freezes_offset_convs_of_frozen_stages():
    cfg = _cfg(DEFORM_ON_PER_STAGE=[True, True, True, True], GC_ON_PER_STAGE=[True, True, False, False],
               FREEZE_AT=2)
    bb = build_backbone(cfg)
    r2, r3 = _blocks(bb, "res2")[0], _blocks(bb, "res3")[0]
    assert not any(p.requires_grad for p in r2.conv2_offset.parameters())
    assert not any(p.requires_grad for p in r2.context_block.parameters())
    assert not r2.conv2.weight.requires_grad
    assert all(p.requires_grad for p in r3.conv2_offset.parameters())
    assert all(p.requires_grad for p in r3.context_block.parameters())


def test_offsets_and_context_block_receive_gradients():
    cfg = _cfg(DEFORM_ON_PER_STAGE=[False, False, True, True], GC_ON_PER_STAGE=[False, False, False, True])
    bb = build_backbone(cfg)
    out = bb(torch.randn(1, 3, 64, 64))
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    b = _blocks(bb, "res5")[0]
    assert b.conv2_offset.weight.grad is not None and b.conv2_offset.weight.grad.abs().sum() > 0
    assert b.context_block.channel_add_conv[3].weight.grad.abs().sum() > 0


def test_c4_backbone_with_dcn():
    cfg = _cfg(C4_YAML, "build_cardd_resnet_backbone", DEFORM_ON_PER_STAGE=[False, True, True, False])
    bb = build_backbone(cfg)
    assert isinstance(_blocks(bb, "res4")[0].conv2, DeformConv)
    assert not hasattr(bb, "res5")  # C4: res5 lives in the ROI head
    out = bb(torch.randn(1, 3, 64, 64))
    assert out["res4"].shape == (1, 1024, 4, 4)


def test_bad_configs_raise_clear_errors():
    if not has_detectron2_C():
        with pytest.raises(RuntimeError, match="DEFORM_BACKEND"):
            build_backbone(_cfg(DEFORM_ON_PER_STAGE=[False, True, True, True], DEFORM_BACKEND="detectron2"))
    with pytest.raises(ValueError, match="DEFORM_BACKEND"):
        build_backbone(_cfg(DEFORM_ON_PER_STAGE=[False, True, True, True], DEFORM_BACKEND="cudnn"))
    with pytest.raises(ValueError, match="GC_ON_PER_STAGE"):
        build_backbone(_cfg(GC_ON_PER_STAGE=[True, True]))
    with pytest.raises(ValueError, match="bottleneck"):
        build_backbone(_cfg(DEPTH=18, RES2_OUT_CHANNELS=64, DEFORM_ON_PER_STAGE=[False, True, True, True]))


def test_input_shape_respected():
    bb = build_backbone(_cfg(DEPTH=18, RES2_OUT_CHANNELS=64), ShapeSpec(channels=1))
    assert bb.bottom_up.stem.conv1.weight.shape[1] == 1


def test_frozen_stats_batchnorm_by_hand():
    from cardd_d2.modeling.layers import FrozenStatsBatchNorm2d

    bn = FrozenStatsBatchNorm2d(1)
    with torch.no_grad():
        bn.running_mean.fill_(2.0)
        bn.running_var.fill_(4.0 - bn.eps)  # sqrt(var + eps) = 2
        bn.weight.fill_(3.0)
        bn.bias.fill_(1.0)
    var = bn.running_var.clone()
    bn.train()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    y = bn(x)  # (x - 2) / 2 * 3 + 1, in training mode too
    assert y.flatten().tolist() == [-0.5, 1.0, 2.5, 4.0]
    y.sum().backward()
    assert bn.weight.grad.item() == 1.0 and bn.bias.grad.item() == 4.0  # sum((x - 2) / 2), number of pixels
    assert bn.running_mean.item() == 2.0 and torch.equal(bn.running_var, var)  # statistics not updated
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]


def test_paper_config_bn_trains_scale_and_shift_with_frozen_statistics(tiny_cfg):
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.structures import Boxes, BitMasks, Instances
    from detectron2.utils.events import EventStorage

    from cardd_d2.modeling.layers import FrozenStatsBatchNorm2d

    cfg = tiny_cfg("CarDD/mask_rcnn_R_50_FPN.yaml", "MODEL.RESNETS.DEPTH", "50", "MODEL.FPN.OUT_CHANNELS", "16",
                   "MODEL.ROI_BOX_HEAD.FC_DIM", "16", "MODEL.ROI_MASK_HEAD.CONV_DIM", "8")
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.BACKBONE.FREEZE_AT) == ("FrozenStatsBN", 2)
    torch.manual_seed(0)
    model = build_model(cfg)
    bu = model.backbone.bottom_up
    norms = {n: m for n, m in bu.named_modules() if isinstance(m, FrozenStatsBatchNorm2d)}
    assert {n.split(".")[0] for n in norms} == {"stem", "res2", "res3", "res4", "res5"}
    for name, m in norms.items():
        frozen = name.split(".")[0] in ("stem", "res2")
        assert m.weight.requires_grad is not frozen and m.bias.requires_grad is not frozen, name
    decay = {id(p): g["weight_decay"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    assert decay[id(bu.res3[0].conv1.norm.weight)] == 1e-4
    stats = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in norms.items()}
    model.train()
    inst = Instances((96, 128))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0]]))
    inst.gt_classes = torch.tensor([2])
    mask = torch.zeros(1, 96, 128, dtype=torch.bool)
    mask[0, 10:50, 10:60] = True
    inst.gt_masks = BitMasks(mask)
    with EventStorage(0):
        losses = model([{"image": torch.randint(0, 255, (3, 96, 128)).float(), "instances": inst}])
    sum(losses.values()).backward()
    assert bu.res3[0].conv1.norm.weight.grad.abs().sum() > 0 and bu.res5[2].conv3.norm.bias.grad.abs().sum() > 0
    assert bu.res2[0].conv1.norm.weight.grad is None
    for n, m in norms.items():
        assert torch.equal(m.running_mean, stats[n][0]) and torch.equal(m.running_var, stats[n][1]), n
