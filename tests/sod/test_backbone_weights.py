"""ImageNet backbone of PoolNet / SGL-KRN: the MSRA R-50.pkl mapping, the download cache and the config default.

Never downloads: the cache ($FVCORE_CACHE) points at a tmp folder holding a synthetic MSRA pickle, and iopath's
download function is replaced by one that fails.
"""
import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cardd_sod.config import setup_sod_cfg
from cardd_sod.engine.trainer import model_kwargs
from cardd_sod.models.backbone_weights import MSRA_R50, load_backbone_weights, resolve_backbone_weights
from cardd_sod.models.resnet_caffe import CaffeResNet50

EPS = 1e-5
STAGES = {2: (3, 64, 256), 3: (4, 128, 512), 4: (6, 256, 1024), 5: (3, 512, 2048)}  # blocks, width, out channels


def _msra_blobs(seed=0):
    """Unfolded BN statistics per layer and the MSRA blobs folded from them (Caffe2 names, float32 numpy)."""
    rng = np.random.default_rng(seed)
    convs = {"conv1": (64, 3, 7, 7)}
    bns = {"res_conv1_bn": 64}
    cin = 64
    for st, (n, w, cout) in STAGES.items():
        for b in range(n):
            p = f"res{st}_{b}_"
            if b == 0:
                convs[p + "branch1"] = (cout, cin, 1, 1)
                bns[p + "branch1_bn"] = cout
            convs[p + "branch2a"] = (w, cin if b == 0 else cout, 1, 1)
            convs[p + "branch2b"] = (w, w, 3, 3)
            convs[p + "branch2c"] = (cout, w, 1, 1)
            for k in "abc":
                bns[p + f"branch2{k}_bn"] = convs[p + f"branch2{k}"][0]
        cin = cout
    blobs, unfolded = {}, {}
    for name, shape in convs.items():
        fan_in = int(np.prod(shape[1:]))
        blobs[name + "_w"] = (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)
    for name, c in bns.items():
        gamma, beta = rng.uniform(0.5, 1.0, c), rng.normal(0, 0.1, c)
        mean, var = rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)
        unfolded[name] = (gamma, beta, mean, var)
        s = gamma / np.sqrt(var + EPS)
        blobs[name + "_s"] = s.astype(np.float32)
        blobs[name + "_b"] = (beta - mean * s).astype(np.float32)
    blobs["fc1000_w"] = rng.standard_normal((1000, 2048)).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    return blobs, unfolded


def _reference_forward(blobs, x):
    """Hand-written caffe ResNet-50 on the MSRA blobs: conv, then the folded affine s * y + b (float64)."""
    B = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in blobs.items()}

    def conv_affine(x, conv, bn, stride=1, pad=0, dil=1, relu=True):
        y = F.conv2d(x, B[conv + "_w"], stride=stride, padding=pad, dilation=dil)
        y = y * B[bn + "_s"].view(1, -1, 1, 1) + B[bn + "_b"].view(1, -1, 1, 1)
        return F.relu(y) if relu else y

    x = conv_affine(x, "conv1", "res_conv1_bn", stride=2, pad=3)
    outs = [x]
    x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    for st, (n, _, _) in STAGES.items():
        stride = 2 if st in (3, 4) else 1   # on the first 1x1 (caffe), none in res5
        dil = 2 if st == 5 else 1           # res5 dilated: output stride 16
        for b in range(n):
            p = f"res{st}_{b}_"
            s = stride if b == 0 else 1
            y = conv_affine(x, p + "branch2a", p + "branch2a_bn", stride=s)
            y = conv_affine(y, p + "branch2b", p + "branch2b_bn", pad=dil, dil=dil)
            y = conv_affine(y, p + "branch2c", p + "branch2c_bn", relu=False)
            short = conv_affine(x, p + "branch1", p + "branch1_bn", stride=s, relu=False) if b == 0 else x
            x = F.relu(y + short)
        outs.append(x)
    return outs


@pytest.fixture(scope="module")
def msra():
    return _msra_blobs()


@pytest.fixture
def cache(tmp_path, monkeypatch, msra):
    """$FVCORE_CACHE with the synthetic R-50.pkl where the download cache keeps it; downloads fail."""
    import iopath.common.file_io as fio

    def no_download(url, *a, **k):
        raise urllib.error.URLError(f"test: no network for {url}")
    monkeypatch.setattr(fio, "download", no_download)
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    target.parent.mkdir(parents=True)
    blobs = dict(msra[0])
    blobs["res2_0_branch2a_w_momentum"] = np.zeros(1, np.float32)  # solver state in some Caffe2 files: skipped
    with open(target, "wb") as f:
        pickle.dump(blobs, f, protocol=2)
    return target


def test_msra_pickle_maps_every_tensor_and_matches_hand_reference(cache, msra):
    blobs, _ = msra
    torch.manual_seed(0)
    res = CaffeResNet50()
    before = {k: v.clone() for k, v in res.state_dict().items()}
    report = load_backbone_weights(res, MSRA_R50)
    assert report["file"] == str(cache) and report["format"] == "msra"
    # 53 convolutions + 53 folded batch norms (scale, shift) = 159 file tensors; fc1000 skipped
    assert report["tensors_read"] == 53 + 2 * 53 == 159
    assert report["skipped"] == ["fc1000_b", "fc1000_w"]
    # every weight / bias / running statistic of the backbone is written (num_batches_tracked is unused)
    sd = res.state_dict()
    written = [k for k in sd if not k.endswith("num_batches_tracked")]
    assert report["entries_set"] == len(written) == 53 + 4 * 53
    assert all(not torch.equal(sd[k], before[k]) for k in written if not k.endswith("running_mean"))
    # in float32 each frozen BN is exactly s * x + b: mean 0 and (running_var + eps) == 1
    for m in res.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert not m.running_mean.any() and torch.equal((m.running_var + m.eps).rsqrt(), torch.ones_like(m.weight))
    x = torch.randn(1, 3, 67, 61, dtype=torch.float64)
    with torch.no_grad():
        ours = res.double()(x)
    ref = _reference_forward(blobs, x)
    assert [tuple(o.shape) for o in ours] == [tuple(r.shape) for r in ref]
    for o, r in zip(ours, ref):  # float64 run of the float32 variance 1 - eps: ~1e-8 relative per layer
        assert (o - r).abs().max() <= 1e-6 * r.abs().max(), "mapped backbone differs from conv + folded affine"


def test_folded_msra_equals_unfolded_batch_norm(cache, msra, tmp_path):
    """The MSRA file and the same network with unfolded BN (PoolNet's resnet50_caffe.pth form) compute the same."""
    blobs, unfolded = msra
    from cardd_sod.models.backbone_weights import msra_name
    a = CaffeResNet50()
    load_backbone_weights(a, str(cache))  # a local .pkl path works as well as the URL
    sd = {}
    for name, m in a.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            sd[f"{name}.weight"] = torch.from_numpy(blobs[msra_name(name) + "_w"])
        elif isinstance(m, torch.nn.BatchNorm2d):
            gamma, beta, mean, var = (torch.from_numpy(v).float() for v in unfolded[msra_name(name)])
            sd.update({f"{name}.weight": gamma, f"{name}.bias": beta, f"{name}.running_mean": mean,
                       f"{name}.running_var": var})
    path = tmp_path / "resnet50_caffe.pth"
    torch.save({"base.resnet." + k: v for k, v in sd.items()}, path)
    b = CaffeResNet50()
    assert load_backbone_weights(b, str(path))["format"] == "state_dict"
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for oa, ob in zip(a.double()(x), b.double()(x)):
            assert (oa - ob).abs().max() <= 1e-5 * ob.abs().max()


def test_offline_error_names_key_url_and_cache_path(tmp_path, monkeypatch):
    import iopath.common.file_io as fio

    def no_download(url, *a, **k):
        raise urllib.error.URLError("test: no network")
    monkeypatch.setattr(fio, "download", no_download)
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "empty"))
    where = os.path.join(str(tmp_path / "empty"), "detectron2", "ImageNetPretrained", "MSRA", "R-50.pkl")
    with pytest.raises(FileNotFoundError) as e:
        resolve_backbone_weights(MSRA_R50)
    msg = str(e.value)
    assert "MODEL.BACKBONE_WEIGHTS" in msg and "no network" in msg
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl" in msg
    assert where in msg
    with pytest.raises(FileNotFoundError, match="backbone weights file not found: .*nothere.pkl"):
        resolve_backbone_weights(str(tmp_path / "nothere.pkl"))


def test_msra_pickle_errors(tmp_path):
    res = CaffeResNet50()
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"conv1_w": os.getcwd}))  # a non-numpy global: refused, not called
    with pytest.raises(ValueError, match=r"evil.pkl could not be read .*refusing to load posix.getcwd"):
        load_backbone_weights(res, str(evil))
    blobs, _ = _msra_blobs(1)
    blobs.pop("res4_3_branch2b_bn_s")
    blobs["conv1_w"] = blobs["conv1_w"][:, :, :3, :3]
    blobs["pred_w"] = np.zeros(3, np.float32)
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as f:  # detectron2 model-zoo wrapper
        pickle.dump({"model": blobs, "__author__": "test"}, f)
    with pytest.raises(ValueError, match=r"bad.pkl is not the MSRA caffe ResNet-50: 1 missing blobs "
                                         r"\(e.g. \['res4_3_branch2b_bn_s'\]\); 1 unexpected blobs \(e.g. \['pred_w'\]\); "
                                         r"1 shape mismatches \(e.g. \['conv1_w: file \(64, 3, 3, 3\)"):
        load_backbone_weights(res, str(bad))


def test_config_default_is_msra_and_reaches_the_model(cache, tmp_path):
    cfg = setup_sod_cfg("configs/SOD/sgl_krn.yaml")
    assert cfg.MODEL.BACKBONE_WEIGHTS == MSRA_R50 == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert model_kwargs(cfg) == {"backbone_weights": MSRA_R50}
    from cardd_sod import build_sod_model
    m = build_sod_model("poolnet", **model_kwargs(setup_sod_cfg("configs/SOD/poolnet.yaml")))
    assert m.backbone_report["format"] == "msra" and m.backbone_report["tensors_read"] == 159
    # whole-model weights replace the backbone load; csnet / u2net have no ImageNet part
    assert model_kwargs(setup_sod_cfg("configs/SOD/poolnet.yaml", ["MODEL.WEIGHTS", "x.pth"])) == {}
    assert model_kwargs(setup_sod_cfg("configs/SOD/u2netp.yaml")) == {}
    with pytest.warns(UserWarning, match="MODEL.BACKBONE_WEIGHTS is empty: the poolnet backbone starts from random"):
        assert model_kwargs(setup_sod_cfg("configs/SOD/poolnet.yaml", ["MODEL.BACKBONE_WEIGHTS", ""])) == {}
    with pytest.raises(ValueError, match="set MODEL.BACKBONE_WEIGHTS instead"):
        model_kwargs(setup_sod_cfg("configs/SOD/poolnet.yaml", ["MODEL.KWARGS.backbone_weights", "a.pth"]))
