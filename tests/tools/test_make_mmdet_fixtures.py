"""tools/parity/make_mmdet_fixtures.py without mmdetection: usage errors and the mmcv._ext shim."""
import importlib.util
import os
import sys

import pytest
import torch
import torchvision

from tiny_config import REPO_ROOT

_TOOL = os.path.join(REPO_ROOT, "tools", "parity", "make_mmdet_fixtures.py")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_mmdet_fixtures", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_missing_release_folder_is_a_usage_error(tool, tmp_path, capsys):
    assert tool.main(["--release", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "configs/car_damage" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ext_shim_runs_the_four_ops_on_torchvision_and_refuses_the_rest(tool, monkeypatch):
    monkeypatch.delitem(sys.modules, "mmcv._ext", raising=False)
    tool.install_ext_shim()
    ext = sys.modules["mmcv._ext"]
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ext.nms(boxes, scores, iou_threshold=0.5, offset=0).tolist() == [0, 2]
    x = torch.randn(1, 2, 8, 8, generator=g)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]])
    out = torch.empty(1, 2, 3, 3)
    ext.roi_align_forward(x, rois, out, None, None, aligned_height=3, aligned_width=3, spatial_scale=1.0,
                          sampling_ratio=0, pool_mode=1, aligned=True)
    assert torch.equal(out, torchvision.ops.roi_align(x, rois, (3, 3), 1.0, 0, True))
    w = torch.randn(4, 2, 3, 3, generator=g)
    offset = torch.randn(1, 18, 8, 8, generator=g)
    out = torch.empty(1, 4, 8, 8)
    ext.deform_conv_forward(x, w, offset, out, None, None, kW=3, kH=3, dW=1, dH=1, padW=1, padH=1, dilationW=1,
                            dilationH=1, group=1, deformable_group=1, im2col_step=1)
    assert torch.equal(out, torchvision.ops.deform_conv2d(x, offset, w, None, 1, 1, 1))
    offset27 = torch.randn(1, 27, 8, 8, generator=g)
    bias = torch.randn(4, generator=g)
    ext.modulated_deform_conv_forward(x, w, bias, None, offset27[:, :18], offset27[:, 18:].sigmoid(), out, None,
                                      kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1, dilation_h=1,
                                      dilation_w=1, group=1, deformable_group=1, with_bias=True)
    ref = torchvision.ops.deform_conv2d(x, offset27[:, :18], w, bias, 1, 1, 1, offset27[:, 18:].sigmoid())
    assert torch.equal(out, ref)
    with pytest.raises(NotImplementedError, match="softnms"):
        ext.softnms(boxes, scores)
    assert not hasattr(ext, "__file__")
