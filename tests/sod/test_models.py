"""SOD models: registry, exact parameter counts, outputs, minimum input sizes, backbone weights, one training step.

Big models (PoolNet 68M, SGL-KRN 56M, U2-Net 44M) are built once per module and run at their smallest size.
"""
import sys

import pytest
import torch

import cardd_sod
from cardd_sod import build_sod_loss, build_sod_model, list_sod_models
from cardd_sod.models import SOD_PARAM_COUNTS, count_parameters, get_sod_spec
from cardd_sod.models.csnet import (CSNET_VARIANTS, CSNet, csnet_config_from_reference, csnet_layer_config,
                                    csnet_param_groups)
from cardd_sod.models.backbone_weights import load_backbone_weights
from cardd_sod.models.resnet_caffe import stride16_size

NAMES = ["csnet", "poolnet", "sgl_krn", "u2net", "u2netp"]
# (batch, size) for forward / train tests: the smallest size each model accepts (CSNet: 32 so that batch-norm in
# train mode sees > 1 value per channel on its 1/16 branch with batch 2).
TRAIN_SHAPE = {"csnet": (2, 32), "poolnet": (1, 111), "sgl_krn": (1, 111), "u2net": (2, 16), "u2netp": (2, 16)}
PAPER_LR = {"csnet": 1e-4, "poolnet": 5e-5, "sgl_krn": 5e-5, "u2net": 1e-3, "u2netp": 1e-3}


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A caffe ResNet-50 state dict (distinctive values, 'base.resnet.' prefix, an extra fc key) on disk."""
    from cardd_sod.models.resnet_caffe import CaffeResNet50
    torch.manual_seed(1)
    res = CaffeResNet50()
    sd = {"base.resnet." + k: v for k, v in res.state_dict().items()}
    sd["base.resnet.conv1.weight"] = torch.full_like(sd["base.resnet.conv1.weight"], 0.125)
    sd["base.resnet.layer4.2.bn3.running_var"] = torch.full_like(sd["base.resnet.layer4.2.bn3.running_var"], 2.0)
    sd["fc.weight"] = torch.zeros(10, 2048)
    path = tmp_path_factory.mktemp("backbone") / "resnet50_caffe.pth"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def models(backbone_file):
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            kwargs = {"backbone_weights": str(backbone_file)} if name == "sgl_krn" else {}
            cache[name] = build_sod_model(name, **kwargs)
            if name == "sgl_krn":  # snapshot before other tests train it
                res = cache[name].base.resnet
                cache["sgl_krn:loaded"] = (res.conv1.weight.detach().clone(),
                                           res.layer4[2].bn3.running_var.clone())
        return cache[name]
    get.cache = cache
    return get


def _target(b, s):
    y = torch.zeros(b, 1, s, s)
    y[:, :, s // 4: 3 * s // 4, s // 3: 3 * s // 4] = 1.0
    return y


def test_registry_and_package_exports():
    assert [m for m in list_sod_models() if not m.startswith("tiny")] == sorted(NAMES)  # tiny*: the tests'
    assert cardd_sod.build_sod_model is build_sod_model
    with pytest.raises(KeyError, match="unknown SOD model 'nope'"):
        build_sod_model("nope")
    with pytest.raises(KeyError, match="unknown SOD model 'nope'"):
        get_sod_spec("nope")


def test_no_detectron2_import():
    import subprocess
    code = "import sys, cardd_sod; cardd_sod.build_sod_model('u2netp'); print('detectron2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_exact_parameter_count(models, name):
    m = models(name)
    assert count_parameters(m) == SOD_PARAM_COUNTS[name]


@pytest.mark.parametrize("variant", ["L-x2", "L-x1"])
def test_csnet_pruned_variants(variant):
    m = build_sod_model("csnet", variant=variant)
    assert count_parameters(m) == SOD_PARAM_COUNTS[f"csnet:{variant}"]
    m.train()
    out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()


def test_csnet_config_roundtrip_and_errors():
    cfg = csnet_layer_config()
    assert cfg["head"]["out"] == 132 and cfg["blocks"][0] == [20, 20] and cfg["blocks"][7] == [80]
    assert cfg["head"]["dilations"] == [[5, 5, 5, 5, 6], [10, 10, 10, 10, 13], [10, 10, 10, 10, 13]]
    # the reference's pickled list format -> same model
    v = CSNET_VARIANTS["L-x1"]
    ref = [[[3], v["blocks"][0]]] + [[v["blocks"][i - 1], v["blocks"][i]] for i in range(1, 18)]
    sides = [v["blocks"][7][0], v["blocks"][13][0], v["blocks"][17][0]]
    ref += [[sides, v["head"]["fuse"]], [v["head"]["fuse"], v["head"]["ms"], v["head"]["dilations"]],
            [v["head"]["ms"], [v["head"]["out"]]], v["stages"]]
    assert csnet_config_from_reference(ref) == v
    assert count_parameters(CSNet(layer_config=ref)) == SOD_PARAM_COUNTS["csnet:L-x1"]
    bad = [list(e) for e in ref]
    bad[3] = [[1, 2], bad[3][1]]
    with pytest.raises(ValueError, match="block 3 input"):
        csnet_config_from_reference(bad)
    with pytest.raises(ValueError, match="unknown variant"):
        CSNet(variant="L-x3")


def test_csnet_eval_needs_a_train_forward_first():
    # Faithful quirk of the release: default BN statistics times the x100 weights blow up in eval mode.
    torch.manual_seed(0)
    m = build_sod_model("csnet").eval()
    with torch.no_grad():
        assert not torch.isfinite(m(torch.randn(1, 3, 16, 16))).all()
    m.train()
    m(torch.randn(2, 3, 32, 32))
    m.eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 16, 48))
    assert torch.isfinite(out).all() and out.shape == (1, 1, 16, 48)
    sal = m.saliency(out)
    assert sal.min() >= 0 and sal.max() <= 1


def test_csnet_param_groups():
    m = build_sod_model("csnet")
    groups = csnet_param_groups(m, lr=1e-4, weight_decay=5e-3)
    picked = groups[1]["params"]
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 5e-3
    # two branches x 2 modules (gOctConv, first depthwise) for 15 two-branch blocks; 1 branch for 3 stage ends
    # (their gOctConv and first depthwise conv) -> 15 * 4 + 3 * 2 = 66 BN weight tensors
    assert len(picked) == 66
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == SOD_PARAM_COUNTS["csnet"]


def test_poolnet_frozen_batchnorm(models):
    m = models("poolnet")
    frozen = [p for p in m.parameters() if not p.requires_grad]
    assert sum(p.numel() for p in frozen) == 53_120
    bn = m.base.resnet.layer1[0].bn1
    before = bn.running_mean.clone()
    m.train()
    with torch.no_grad():
        m(torch.randn(1, 3, 111, 111) * 50)
    assert torch.equal(bn.running_mean, before)


def test_min_input_size_rules():
    assert stride16_size(111) == 8 and stride16_size(110) == 7
    assert get_sod_spec("poolnet").min_input_size == 111
    assert get_sod_spec("sgl_krn").min_input_size == 111
    assert get_sod_spec("csnet").min_input_size == 16 and get_sod_spec("csnet").size_divisor == 16
    assert get_sod_spec("u2net").min_input_size == 1


@pytest.mark.parametrize("name,bad,msg", [
    ("poolnet", (1, 3, 110, 200), "PoolNet: input height 110 is too small"),
    ("sgl_krn", (1, 3, 200, 110), "SGL-KRN: input width 110 is too small"),
    ("csnet", (2, 3, 8, 8), "CSNet: input height 8 is too small"),
    ("csnet", (2, 3, 32, 24), "CSNet: input width 24 is not a multiple of 16"),
    ("u2netp", (1, 3, 0, 4), "U2-Netp: input height 0 is too small"),
    ("u2net", (1, 1, 8, 8), r"U2-Net: expected an image batch of shape \[B, 3, H, W\]"),
])
def test_too_small_input_gives_clear_error(models, name, bad, msg):
    with pytest.raises(ValueError, match=msg):
        models(name)(torch.zeros(bad))


def test_u2net_accepts_one_pixel(models):
    m = models("u2netp").eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 1, 1))
    assert len(outs) == 7 and all(o.shape == (1, 1, 1, 1) for o in outs)


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_lowers_loss_and_outputs(models, name):
    """Forward at the smallest size: output count / shapes / ranges, saliency(); then one Adam step on a tiny
    batch lowers the loss on that batch."""
    m = models(name)
    m.train()
    b, s = TRAIN_SHAPE[name]
    torch.manual_seed(0)
    spec = get_sod_spec(name)
    x = torch.randn(b, 3, s, s) * (50.0 if spec.expects_0_255 else 1.0)
    y = _target(b, s)
    loss_fn = build_sod_loss(spec.loss, iter_size=1)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=PAPER_LR[name])

    outs = m(x)
    seq = (outs,) if torch.is_tensor(outs) else outs
    assert len(seq) == len(spec.output_names)
    for o in seq:
        assert o.shape == (b, 1, s, s) and torch.isfinite(o).all()
        if spec.output_kind == "sigmoid":
            assert o.min() >= 0 and o.max() <= 1
    sal = m.saliency(outs)
    assert sal.shape == (b, 1, s, s) and sal.min() >= 0 and sal.max() <= 1

    loss0, terms0 = loss_fn(outs, y, model=m)
    assert torch.isfinite(loss0)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    with torch.no_grad():
        loss1, terms1 = loss_fn(m(x), y, model=m)
    if name == "csnet":
        # the dynamic-weight-decay term depends on the (noisy, x100-amplified) activations; the data term must drop
        assert terms1["bce"] < terms0["bce"]
    else:
        assert loss1 < loss0


def test_sgl_krn_backbone_weights_loaded(models):
    models("sgl_krn")  # built with backbone_weights=backbone_file
    conv1, var = models.cache["sgl_krn:loaded"]
    assert torch.all(conv1 == 0.125)
    assert torch.all(var == 2.0)


def test_backbone_weights_errors(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone weights file not found: .*missing.pth"):
        build_sod_model("poolnet", backbone_weights=str(tmp_path / "missing.pth"))
    res = models("poolnet").base.resnet
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer9.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match=r"bad.pth does not match the caffe ResNet-50: .*missing keys.*unexpected"):
        load_backbone_weights(res, bad)
    shape = tmp_path / "shape.pth"
    sd = {k: v for k, v in res.state_dict().items()}
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(sd, shape)
    with pytest.raises(ValueError, match=r"shape.pth .*shape mismatches.*conv1.weight"):
        load_backbone_weights(res, shape)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth could not be read"):
        load_backbone_weights(res, junk)


def test_sgl_krn_reference_state_dict_filter(models):
    m = models("sgl_krn")
    sd = {"module." + k: v for k, v in m.state_dict().items()}
    sd["module.base.ppms_pre.weight"] = torch.zeros(1)
    sd["module.DeepPool_contour1.conv_sum.weight"] = torch.zeros(1)
    sd["module.score.score.weight"] = torch.zeros(1)
    sd["module.score_contour.score.bias"] = torch.zeros(1)
    filt = type(m).filter_reference_state_dict(sd)
    assert set(filt) == set(m.state_dict())
