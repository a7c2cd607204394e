#!/usr/bin/env python
"""Regenerate the mmdetection parity fixtures (tests/fixtures/mmdet_parity/*.npz) from the authors' released code.

The six CarDD configs of the release (``configs/car_damage/*_cfg.py`` in the CarDD_detection folder of
CarDD-USTC/CarDD-USTC.github.io, a copy of mmdetection 2.25.2) are built at reduced width (ResNet base width 4,
FPN 16 channels, box-head FCs 32, mask-head convs 16 (HTC adds the previous mask head's features to its input, so
they must equal the FPN width); depth, stages, DCN / context blocks, heads and all other settings
as released), every parameter and BatchNorm statistic is drawn at random from a fixed seed, and the model is run
in eval mode on fixed synthetic inputs. Each fixture stores the mmdetection state dict and what the released code
computed from it:

* ``input/img``: raw RGB images (2x3x64x128, uint8), normalised as (img - mean) / std in float32 before the model;
* ``out/c{2..5}``: ResNet outputs; ``out/p{2..6}``: FPN outputs;
* ``out/rpn_cls_l{i}`` / ``out/rpn_reg_l{i}``: RPN objectness logits / anchor deltas per level;
  ``out/proposals_{b}``: the RPN's test-time proposals (x1, y1, x2, y2, sigmoid score) per image;
* ``roi/rois`` fixed boxes (batch index, x1, y1, x2, y2) and, per ROI stage s (one stage for Mask R-CNN),
  ``roi/s{s}_cls``, ``roi/s{s}_reg``, ``roi/s{s}_mask`` (HTC: with mask information flow from the earlier heads);
* ``det/{b}_boxes``, ``det/{b}_scores``, ``det/{b}_labels``, ``det/{b}_masks``: ``simple_test`` detections per
  image (grouped by class, as mmdetection returns them);
* ``train/proposals_{b}``, ``train/gt_boxes_{b}``, ``train/gt_labels_{b}``, ``train/gt_masks_{b}`` and
  ``loss/<name>``: the ROI-head losses of ``roi_head.forward_train`` on those fixed proposals and targets (few
  enough proposals that both frameworks' samplers keep all of them, so the losses do not depend on sampling order);
* ``rpn_assign/{b}_gt_inds``: the RPN's training assignment of every anchor to those ground-truth boxes before
  sampling (-1 ignored, 0 negative, k > 0 ground truth k - 1);
* ``meta``: JSON with the architecture, the reduction, the release's test settings and the versions used.

The state dict is stored in float16: every weight and statistic was drawn float16-exact, so it reads back as the
float32 values the model ran with.

Throwaway environment (nothing of it belongs to this repository):

    python3 -m venv /tmp/mmdet-env
    /tmp/mmdet-env/bin/pip install torch==2.14.1 torchvision==0.29.1 "setuptools<81" wheel
    /tmp/mmdet-env/bin/pip install numpy==1.26.4 addict yapf==0.40.1 pyyaml opencv-python-headless \\
        pycocotools six terminaltables matplotlib scipy packaging
    mkdir -p /tmp/mmdet-src && cd /tmp/mmdet-src
    /tmp/mmdet-env/bin/pip download mmcv-full==1.7.0 --no-deps --no-binary :all: --no-build-isolation
    tar xzf mmcv-full-1.7.0.tar.gz                      # the Python package only; nothing is compiled
    git clone https://github.com/CarDD-USTC/CarDD-USTC.github.io  # code/CarDD_detection = mmdet 2.25.2 + configs
    echo /tmp/mmdet-src/mmcv-full-1.7.0 > $(/tmp/mmdet-env/bin/python -c 'import site; print(site.getsitepackages()[0])')/mmdet_src.pth
    echo /tmp/mmdet-src/CarDD-USTC.github.io/code/CarDD_detection >> $(/tmp/mmdet-env/bin/python -c 'import site; print(site.getsitepackages()[0])')/mmdet_src.pth

    /tmp/mmdet-env/bin/python tools/parity/make_mmdet_fixtures.py \\
        --release /tmp/mmdet-src/CarDD-USTC.github.io/code/CarDD_detection --output tests/fixtures/mmdet_parity

mmcv's compiled extension is replaced by ``mmcv._ext`` built here: the four entry points these models call
(``nms``, ``roi_align_forward``, ``deform_conv_forward``, ``modulated_deform_conv_forward``) run on CPU through
torchvision ops; any other compiled op raises. ``--arch NAME`` (repeatable) limits the run to some architectures.

Exit codes: 0 ok, 1 some architecture failed, 2 usage error (e.g. no release folder).
"""
import argparse
import json
import os
import sys
import tempfile
import types

import numpy as np
import torch
import torchvision

# Released config of each architecture (configs/car_damage/ in the authors' folder).
ARCHS = {
    "mask_rcnn": "mask_rcnn_cfg.py",
    "cascade_mask_rcnn": "cascade_mask_rcnn_cfg.py",
    "gcnet": "gcnet_cfg.py",
    "htc": "htc_cfg.py",
    "dcn": "dcn_cfg.py",
    "dcn_plus": "DCN_plus_cfg.py",
}
# The released configs name their base config by the authors' absolute path.
RELEASE_BASE_PREFIX = "/root/autodl-nas/code/ODIS/CarDD_detection/configs/"
# Reduced width: small enough that the six fixtures together are a few MB.
REDUCTION = {"base_channels": 4, "fpn_channels": 16, "fc_dim": 32, "mask_conv_dim": 16}
IMG_H, IMG_W, BATCH = 64, 128, 2
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


# ----------------------------------------------------------------------------- mmcv._ext on torchvision
def _ext_nms(bboxes, scores, iou_threshold, offset):
    if offset != 0:
        raise NotImplementedError("nms shim: only offset=0 (mmdet 2.x boxes)")
    return torchvision.ops.nms(bboxes, scores, iou_threshold)


def _ext_roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width,
                           spatial_scale, sampling_ratio, pool_mode, aligned):
    if pool_mode != 1:
        raise NotImplementedError("roi_align shim: only pool_mode 'avg'")
    out = torchvision.ops.roi_align(input, rois, (aligned_height, aligned_width), spatial_scale,
                                    sampling_ratio, aligned)
    output.copy_(out)


def _ext_deform_conv_forward(input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW, padH,
                             dilationW, dilationH, group, deformable_group, im2col_step):
    out = torchvision.ops.deform_conv2d(input, offset, weight, None, (dH, dW), (padH, padW),
                                        (dilationH, dilationW))
    output.copy_(out)


def _ext_modulated_deform_conv_forward(input, weight, bias, ones, offset, mask, output, columns, kernel_h,
                                       kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                                       group, deformable_group, with_bias):
    out = torchvision.ops.deform_conv2d(input, offset, weight, bias if with_bias else None, (stride_h, stride_w),
                                        (pad_h, pad_w), (dilation_h, dilation_w), mask)
    output.copy_(out)


def install_ext_shim():
    ext = types.ModuleType("mmcv._ext")
    ext.nms = _ext_nms
    ext.roi_align_forward = _ext_roi_align_forward
    ext.deform_conv_forward = _ext_deform_conv_forward
    ext.modulated_deform_conv_forward = _ext_modulated_deform_conv_forward

    def missing(name):  # mmcv checks at import that every op of a module exists; calling one is an error
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is not provided by the torchvision shim")
        return op

    ext.__getattr__ = missing
    sys.modules["mmcv._ext"] = ext


# ----------------------------------------------------------------------------- model
def load_release_config(release_dir, arch):
    from mmcv import Config

    configs = os.path.join(release_dir, "configs")
    path = os.path.join(configs, "car_damage", ARCHS[arch])
    with open(path) as f:
        text = f.read()
    if RELEASE_BASE_PREFIX not in text:
        raise RuntimeError(f"{path}: expected a _base_ under {RELEASE_BASE_PREFIX}")
    text = text.replace(RELEASE_BASE_PREFIX, configs.rstrip("/") + "/")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(text)
    try:
        return Config.fromfile(f.name)
    finally:
        os.unlink(f.name)


def _as_list(x):
    return x if isinstance(x, (list, tuple)) else [x]


def reduce_width(model_cfg):
    r = REDUCTION
    w, f = r["base_channels"], r["fpn_channels"]
    model_cfg.backbone.base_channels = w
    model_cfg.backbone.init_cfg = None  # no download of ImageNet weights; weights are drawn below
    model_cfg.neck.in_channels = [4 * w * 2 ** i for i in range(4)]
    model_cfg.neck.out_channels = f
    model_cfg.rpn_head.in_channels = f
    model_cfg.rpn_head.feat_channels = f
    rh = model_cfg.roi_head
    for ext in _as_list(rh.bbox_roi_extractor) + _as_list(rh.mask_roi_extractor):
        ext.out_channels = f
    for head in _as_list(rh.bbox_head):
        head.in_channels = f
        head.fc_out_channels = r["fc_dim"]
    for head in _as_list(rh.mask_head):
        head.in_channels = f
        head.conv_out_channels = r["mask_conv_dim"]
    # HTC: the released config inherits a semantic branch that needs COCO-stuff maps; the runnable reading
    # (and cardd's htc configs) have none.
    for key in ("semantic_roi_extractor", "semantic_head"):
        rh.pop(key, None)


def randomise_(model, seed):
    """Every floating tensor of the state dict drawn at random (offset convs and zero-initialised layers
    included), so that no layer is an identity by construction; values are float16-exact."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for name, t in sd.items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            new = torch.rand(t.shape, generator=g) * 0.5 + 0.75
        elif name.endswith("running_mean"):
            new = torch.randn(t.shape, generator=g) * 0.1
        elif t.dim() == 1 and name.endswith("weight"):  # norm scales
            new = torch.rand(t.shape, generator=g) * 0.5 + 0.5
        elif t.dim() == 1:  # biases
            new = torch.randn(t.shape, generator=g) * 0.1
        else:
            fan_in = t[0].numel()
            gain = 0.5 if "conv_offset" in name else 1.0
            new = torch.randn(t.shape, generator=g) * gain / fan_in ** 0.5
        t.copy_(new.half().float())  # exactly representable in float16: stored at half the size, losslessly


# ----------------------------------------------------------------------------- inputs
def make_images(seed):
    """Smooth colour gradients plus a few filled rectangles and ellipses, integer values 0..255."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, IMG_H), torch.linspace(0, 1, IMG_W), indexing="ij")
    imgs = []
    for _ in range(BATCH):
        a = torch.rand(3, 3, generator=g)
        img = 255 * (a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + a[:, 2, None, None]) / 3
        for _ in range(4):
            x0, y0 = (torch.rand(2, generator=g) * torch.tensor([IMG_W - 40, IMG_H - 40])).tolist()
            w, h = (torch.rand(2, generator=g) * 30 + 10).tolist()
            colour = torch.rand(3, generator=g) * 255
            inside = (xx * IMG_W >= x0) & (xx * IMG_W < x0 + w) & (yy * IMG_H >= y0) & (yy * IMG_H < y0 + h)
            img = torch.where(inside, colour[:, None, None], img)
        img = img + torch.randn(img.shape, generator=g) * 8
        imgs.append(img.round().clamp(0, 255))
    return torch.stack(imgs).float()


def normalise(img):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (img - mean) / std


def make_targets(seed):
    """Per image: 3 ground-truth boxes with labels and ellipse masks (bitmaps), and 60 training proposals
    (jittered copies of the ground truth and random boxes)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(IMG_H) + 0.5, torch.arange(IMG_W) + 0.5, indexing="ij")
    out = []
    for _ in range(BATCH):
        xy = torch.rand(3, 2, generator=g) * torch.tensor([IMG_W - 50, IMG_H - 40])
        wh = torch.rand(3, 2, generator=g) * 28 + 12
        gt = torch.cat([xy, xy + wh], 1).round()
        labels = torch.randint(0, 6, (3,), generator=g)
        masks = []
        for x0, y0, x1, y1 in gt.tolist():
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            masks.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8))
        jit = gt.repeat(10, 1)
        size = (jit[:, 2:] - jit[:, :2]).repeat(1, 2)
        jit = jit + torch.randn(jit.shape, generator=g) * 0.15 * size
        rnd_xy = torch.rand(30, 2, generator=g) * torch.tensor([IMG_W - 20, IMG_H - 20])
        rnd = torch.cat([rnd_xy, rnd_xy + torch.rand(30, 2, generator=g) * 40 + 8], 1)
        props = torch.cat([jit, rnd])
        props[:, 0::2] = props[:, 0::2].clamp(0, IMG_W)
        props[:, 1::2] = props[:, 1::2].clamp(0, IMG_H)
        props[:, 2:] = torch.maximum(props[:, 2:], props[:, :2] + 2)
        out.append((props, gt, labels, torch.stack(masks)))
    return out


def make_rois(seed, n=2):
    g = torch.Generator().manual_seed(seed)
    rois = []
    for b in range(BATCH):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([IMG_W - 16, IMG_H - 16])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([IMG_W / 2, IMG_H / 2]) + 4
        rois.append(torch.cat([torch.full((n, 1), float(b)), xy, xy + wh], 1))
    return torch.cat(rois)


# ----------------------------------------------------------------------------- run
def img_metas():
    shape = (IMG_H, IMG_W, 3)
    return [dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=(IMG_H, IMG_W),
                 scale_factor=np.ones(4, dtype=np.float32), flip=False) for _ in range(BATCH)]


def stage_outputs(model, rois, x):
    """ROI-head outputs of every stage on the same fixed boxes."""
    from mmdet.models.roi_heads import CascadeRoIHead, HybridTaskCascadeRoIHead

    rh = model.roi_head
    out = {}
    if isinstance(rh, CascadeRoIHead):
        for s in range(rh.num_stages):
            res = rh._bbox_forward(s, x, rois)
            out[f"roi/s{s}_cls"], out[f"roi/s{s}_reg"] = res["cls_score"], res["bbox_pred"]
            feats = rh.mask_roi_extractor[s](x[:rh.mask_roi_extractor[s].num_inputs], rois)
            if isinstance(rh, HybridTaskCascadeRoIHead) and rh.mask_info_flow:
                last = None
                for i in range(s):
                    last = rh.mask_head[i](feats, last, return_logits=False)
                out[f"roi/s{s}_mask"] = rh.mask_head[s](feats, last, return_feat=False)
            else:
                out[f"roi/s{s}_mask"] = rh.mask_head[s](feats)
    else:
        res = rh._bbox_forward(x, rois)
        out["roi/s0_cls"], out["roi/s0_reg"] = res["cls_score"], res["bbox_pred"]
        out["roi/s0_mask"] = rh._mask_forward(x, rois)["mask_pred"]
    return out


def rpn_assignment(model, feats, metas, gt_boxes):
    """The RPN's training assignment of every anchor before sampling: -1 ignored (between the IoU thresholds, or
    outside ``allowed_border``), 0 negative, k > 0 positive for ground truth k - 1."""
    from mmdet.core.anchor import anchor_inside_flags

    rpn = model.rpn_head
    anchors, valid = rpn.get_anchors([f.shape[-2:] for f in feats], metas, device="cpu")
    out = {}
    for b, gt in enumerate(gt_boxes):
        flat, flags = torch.cat(anchors[b]), torch.cat(valid[b])
        inside = anchor_inside_flags(flat, flags, metas[b]["img_shape"][:2], rpn.train_cfg.allowed_border)
        gt_inds = torch.full((len(flat),), -1, dtype=torch.long)
        gt_inds[inside] = rpn.assigner.assign(flat[inside], gt, None, None).gt_inds
        out[f"rpn_assign/{b}_gt_inds"] = gt_inds.to(torch.int16)
    return out


def run_arch(release_dir, arch, seed):
    from mmcv import __version__ as mmcv_version
    from mmdet import __version__ as mmdet_version
    from mmdet.core import BitmapMasks
    from mmdet.models import build_detector

    cfg = load_release_config(release_dir, arch)
    reduce_width(cfg.model)
    torch.manual_seed(seed)
    model = build_detector(cfg.model)
    randomise_(model, seed)
    model.eval()

    img = make_images(seed + 1)
    img_norm = normalise(img)
    metas = img_metas()
    data = {"input/img": img.to(torch.uint8)}
    with torch.no_grad():
        cs = model.backbone(img_norm)
        ps = model.neck(cs)
        data.update({f"out/c{i + 2}": c for i, c in enumerate(cs)})
        data.update({f"out/p{i + 2}": p for i, p in enumerate(ps)})
        cls, reg = model.rpn_head(ps)
        data.update({f"out/rpn_cls_l{i}": c for i, c in enumerate(cls)})
        data.update({f"out/rpn_reg_l{i}": r for i, r in enumerate(reg)})
        for b, p in enumerate(model.rpn_head.simple_test_rpn(ps, metas)):
            data[f"out/proposals_{b}"] = p
        rois = make_rois(seed + 2)
        data["roi/rois"] = rois
        data.update(stage_outputs(model, rois, ps))
        results = model.simple_test(img_norm, metas, rescale=True)
        for b, (bbox_res, segm_res) in enumerate(results):
            dets = np.concatenate(bbox_res)
            data[f"det/{b}_boxes"] = dets[:, :4]
            data[f"det/{b}_scores"] = dets[:, 4]
            data[f"det/{b}_labels"] = np.concatenate(
                [np.full(len(r), k, dtype=np.int64) for k, r in enumerate(bbox_res)])
            masks = [m for per_class in segm_res for m in per_class]
            data[f"det/{b}_masks"] = (np.stack(masks) if masks else np.zeros((0, IMG_H, IMG_W), bool))
            data[f"det/{b}_masks"] = np.packbits(data[f"det/{b}_masks"].astype(bool), axis=-1)

        targets = make_targets(seed + 3)
        for b, (props, gt, labels, masks) in enumerate(targets):
            data[f"train/proposals_{b}"], data[f"train/gt_boxes_{b}"] = props, gt
            data[f"train/gt_labels_{b}"], data[f"train/gt_masks_{b}"] = labels, masks
        data.update(rpn_assignment(model, ps, metas, [t[1] for t in targets]))
        losses = model.roi_head.forward_train(
            ps, metas, [t[0] for t in targets], [t[1] for t in targets], [t[2] for t in targets], None,
            [BitmapMasks(t[3].numpy(), IMG_H, IMG_W) for t in targets])
        for name, v in losses.items():
            data[f"loss/{name}"] = v if torch.is_tensor(v) else torch.tensor(v)

    sd = {f"sd/{k}": (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {
        "arch": arch,
        "release_config": f"configs/car_damage/{ARCHS[arch]}",
        "reduction": REDUCTION,
        "seed": seed,
        "image_size": [IMG_H, IMG_W],
        "versions": {"mmdet": mmdet_version, "mmcv": mmcv_version, "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
        "test_cfg": json.loads(json.dumps(cfg.model.test_cfg.to_dict() if hasattr(cfg.model.test_cfg, "to_dict")
                                          else dict(cfg.model.test_cfg))),
    }
    arrays = {k: (v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v))
              for k, v in {**sd, **data}.items()}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--release", required=True, help="the authors' CarDD_detection folder (configs/ and mmdet/)")
    p.add_argument("--output", required=True, help="folder for the .npz fixtures")
    p.add_argument("--arch", action="append", choices=sorted(ARCHS), help="only these (default: all six)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.release, "configs", "car_damage")):
        print(f"error: {args.release} has no configs/car_damage/ (the released CarDD_detection folder)",
              file=sys.stderr)
        return 2
    install_ext_shim()
    torch.set_num_threads(1)
    os.makedirs(args.output, exist_ok=True)
    failed = []
    for arch in args.arch or list(ARCHS):
        try:
            arrays = run_arch(args.release, arch, args.seed)
        except Exception as e:  # noqa: BLE001 - reported per architecture, the others still run
            import traceback

            traceback.print_exc()
            print(f"{arch}: failed: {e}", file=sys.stderr)
            failed.append(arch)
            continue
        dst = os.path.join(args.output, f"{arch}.npz")
        np.savez_compressed(dst, **arrays)
        print(f"{arch}: wrote {dst} ({os.path.getsize(dst) / 1e6:.2f} MB, {len(arrays)} arrays)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
