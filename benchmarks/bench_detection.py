#!/usr/bin/env python
"""Speed of Mask R-CNN vs DCN vs DCN+ (R-50 and R-101): inference latency and training step time.

    python benchmarks/bench_detection.py --quick                       # CPU smoke run (~2.5 CPU-minutes)
    python benchmarks/bench_detection.py --device cuda --output out.json  # full sizes, fp32 and AMP

* Inference: batch 1, one 800x1333 image (--infer-size), eval mode, no_grad; median of --reps after --warmup.
* Training step: batch 4 (--train-batch), image sizes cycling through --train-sizes (default: heights 640, 800,
  1024, 1200 at width 1333, DCN+'s multi-scale range), 3 random boxes + polygon masks per image; zero_grad, forward,
  backward, SGD step; median of --reps steps after --warmup.
* Precisions: fp32 and AMP (CUDA: fp16 autocast + GradScaler; CPU: bf16 autocast, only when asked with
  --precisions fp32 amp).
* Models come from the project's configs (random init, MODEL.WEIGHTS "", FrozenBN statistics set from one
  random image so activations stay finite), so DCN+ includes its focal ROI head and
  DCNv1 on res2-res5 (res2 frozen). Ratios are against Mask R-CNN of the same depth, measured in the same process.
Output: JSON (stdout, and --output if given). Not a test; never asserts on timings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from bench_output import emit_json  # benchmarks/ (the script folder) is on sys.path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {  # name -> config template (depth filled in)
    "mask_rcnn": "CarDD/mask_rcnn_R_{d}_FPN.yaml",
    "dcn": "CarDD/dcn_R_{d}_FPN.yaml",
    "dcn_plus": "CarDD/dcn_plus_R_{d}_FPN.yaml",
    # paper baselines (cascade/HTC helper): mmdet-style Cascade Mask R-CNN, GCNet, HTC without semantic branch
    "cascade_mask_rcnn": "CarDD/cascade_mask_rcnn_R_{d}_FPN.yaml",
    "gcnet": "CarDD/gcnet_R_{d}_FPN.yaml",
    "htc": "CarDD/htc_R_{d}_FPN.yaml",
}


def _parse_size(s: str):
    h, w = s.lower().split("x")
    return int(h), int(w)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--depths", nargs="+", type=int, default=[50, 101])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "amp"],
                   help="default: fp32 and amp on CUDA, fp32 on CPU")
    p.add_argument("--infer-size", type=_parse_size, default=(800, 1333), help="HxW")
    p.add_argument("--train-sizes", nargs="+", type=_parse_size,
                   default=[(640, 1333), (800, 1333), (1024, 1333), (1200, 1333)], help="HxW, cycled over steps")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=None, help="default 5 (--quick: 1)")
    p.add_argument("--reps", type=int, default=None, help="default 20 (--quick: 2)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-infer", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke run: R-50 only, 256x416 inference, batch 2 at 224x384 and 256x384, "
                        "1 warm-up, 2 reps (explicit options win)")
    p.add_argument("--output", default=None, help="also write the JSON here")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="extra config KEY VALUE pairs")
    return p


def build_model(config: str, device: str, opts):
    from detectron2.modeling import build_model as d2_build_model

    from cardd_d2.engine import setup_cfg

    cfg = setup_cfg(os.path.join(REPO_ROOT, "configs", config),
                    ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device] + list(opts), freeze=True)
    model = d2_build_model(cfg)
    return model, cfg


def calibrate_frozen_bn(model, device, size=(256, 384)):
    """Random init leaves frozen-statistics BN (FrozenBN, FrozenStatsBN) as identity, so activations blow up through
    the ResNet (Inf/NaN proposals in training). Set their statistics from one forward pass of a random image
    (data-dependent init), so the timed runs see activations of a sane scale, as with trained weights."""
    from detectron2.layers import FrozenBatchNorm2d

    from cardd_d2.modeling.layers import FrozenStatsBatchNorm2d

    def pre_hook(module, inputs):
        x = inputs[0].detach().float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules()
               if isinstance(m, (FrozenBatchNorm2d, FrozenStatsBatchNorm2d))]
    gen = torch.Generator().manual_seed(1)
    h, w = size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = model.preprocess_image([{"image": _image(h, w, device, gen)}])
            model.backbone(x.tensor)
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device, precision):
    if precision == "fp32":
        return torch.autocast(device_type=device.split(":")[0], enabled=False)
    dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _image(h, w, device, gen):
    return (torch.rand(3, h, w, generator=gen) * 255).to(device)


def _instances(h, w, num_classes, gen):
    from detectron2.structures import Boxes, Instances, PolygonMasks

    inst = Instances((h, w))
    boxes, polys = [], []
    for _ in range(3):
        bw, bh = float(w) * (0.1 + 0.3 * torch.rand(1, generator=gen).item()), float(h) * (
            0.1 + 0.3 * torch.rand(1, generator=gen).item())
        x0 = (w - bw) * torch.rand(1, generator=gen).item()
        y0 = (h - bh) * torch.rand(1, generator=gen).item()
        boxes.append([x0, y0, x0 + bw, y0 + bh])
        polys.append([[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]])
    inst.gt_boxes = Boxes(torch.tensor(boxes))
    inst.gt_classes = torch.randint(0, num_classes, (3,), generator=gen)
    inst.gt_masks = PolygonMasks(polys)
    return inst


def time_inference(model, device, precision, size, warmup, reps):
    gen = torch.Generator().manual_seed(0)
    h, w = size
    batch = [{"image": _image(h, w, device, gen), "height": h, "width": w}]
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + reps):
            _sync(device)
            t0 = time.perf_counter()
            with _autocast(device, precision):
                model(batch)
            _sync(device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return times


def time_training(model, cfg, device, precision, sizes, batch_size, warmup, reps):
    from detectron2.utils.events import EventStorage

    gen = torch.Generator().manual_seed(0)
    batches = []
    for h, w in sizes:
        batches.append([{"image": _image(h, w, device, gen),
                         "instances": _instances(h, w, cfg.MODEL.ROI_HEADS.NUM_CLASSES, gen)}
                        for _ in range(batch_size)])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)
    use_scaler = precision == "amp" and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    times = []
    with EventStorage(0) as storage:
        for i in range(warmup + reps):
            batch = batches[i % len(batches)]
            _sync(device)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with _autocast(device, precision):
                losses = model(batch)
            loss = sum(losses.values())
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            _sync(device)
            storage.step()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return times


def _summary(times):
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "min_ms": min(times),
            "n": len(times)}


def main(argv=None):
    args = get_parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if args.quick:
        args.depths = [50] if args.depths == [50, 101] else args.depths
        args.infer_size = (256, 416)
        args.train_sizes = [(224, 384), (256, 384)]
        args.train_batch = 2
    warmup_default, reps_default = (1, 2) if args.quick else (5, 20)
    args.warmup = warmup_default if args.warmup is None else args.warmup
    args.reps = reps_default if args.reps is None else args.reps
    precisions = args.precisions or (["fp32", "amp"] if device.startswith("cuda") else ["fp32"])
    if device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True

    import cardd_d2  # noqa: F401  (registers backbones and ROI heads)
    from cardd_d2.modeling.layers.deform_conv import kernel_for

    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    setup = {"infer_size_hw": list(args.infer_size), "train_sizes_hw": [list(s) for s in args.train_sizes],
             "train_batch": args.train_batch, "warmup": args.warmup, "reps": args.reps, "precisions": precisions,
             "quick": args.quick, "opts": args.opts}
    results = []
    for depth in args.depths:
        for name in args.models:
            config = MODELS[name].format(d=depth)
            torch.manual_seed(0)
            model, cfg = build_model(config, device, args.opts)
            calibrate_frozen_bn(model, device)
            deform_backend = None
            if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
                deform_backend = kernel_for(cfg.MODEL.RESNETS.DEFORM_BACKEND, device)
            for precision in precisions:
                row = {"model": name, "depth": depth, "config": config, "precision": precision,
                       "deform_backend": deform_backend}
                if not args.skip_infer:
                    row["inference"] = _summary(
                        time_inference(model, device, precision, args.infer_size, args.warmup, args.reps))
                if not args.skip_train:
                    row["train_step"] = _summary(time_training(model, cfg, device, precision, args.train_sizes,
                                                               args.train_batch, args.warmup, args.reps))
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    # ratios vs Mask R-CNN of the same depth and precision
    base = {(r["depth"], r["precision"]): r for r in results if r["model"] == "mask_rcnn"}
    for r in results:
        b = base.get((r["depth"], r["precision"]))
        if b is None:
            continue
        r["ratio_vs_mask_rcnn"] = {k: r[k]["median_ms"] / b[k]["median_ms"]
                                   for k in ("inference", "train_step") if k in r and k in b}
    out = {"benchmark": "bench_detection", "env": env, "setup": setup, "results": results}
    emit_json(out, args.output, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
