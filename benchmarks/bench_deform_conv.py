#!/usr/bin/env python
"""Deformable conv kernels (torchvision, "sampling", detectron2 when compiled) vs a plain conv: ms per call, JSON.

    python benchmarks/bench_deform_conv.py                 # CPU: the quickstart's DCN shapes + one larger shape
    python benchmarks/bench_deform_conv.py --device cuda   # performance.md shape 2x256x100x168, 3x3 256->256
    python benchmarks/bench_deform_conv.py --shape 4 64 24 32 --shape 2 128 64 96
    python benchmarks/bench_deform_conv.py --train-step    # + one training step of the quickstart DCN+ model
                                                           #   per DEFORM_BACKEND (4 random 192x256 images)

Ratios are against the plain conv (and, for the training step, the first backend) measured in the same process.
With --amp the CUDA runs use fp16 autocast (the deformable conv then computes in float32 internally). With
detectron2._C importable, its compiled kernel is measured too. Not a test: numbers depend on the machine.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

from cardd_d2.modeling.layers.deform_conv import (
    DeformConv,
    ModulatedDeformConv,
    deform_backend_info,
    has_detectron2_C,
)

# batch 4 at the quickstart's 192x256 input: the res3 / res4 / res5 3x3 convs of the quarter-width ResNet-50
# (bottleneck widths 32 / 64 / 128 at strides 4 / 8 / 16 on a ~192x256 image), plus one larger feature map
CPU_SHAPES = [(4, 32, 48, 64), (4, 64, 24, 32), (4, 128, 12, 16), (2, 128, 64, 96)]
CUDA_SHAPES = [(2, 256, 100, 168)]
QUICKSTART_DCN = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "configs", "CarDD", "quickstart",
    "dcn_plus_R_50_narrow_FPN_scratch.yaml",
)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_interleaved(fns, device, warmup, iters):
    """{name: (median ms, min ms)}. The functions take turns (round robin), so a change in machine load during
    the run hits all of them alike; the minimum is the least disturbed sample."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    samples = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) * 1000)
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


def bench(device, shape, warmup, iters, amp):
    n, c, h, w = shape
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, device=device)
    offset = torch.randn(n, 18, h, w, device=device) * 2
    mask = torch.rand(n, 9, h, w, device=device)
    convs = {"conv2d": (nn.Conv2d(c, c, 3, padding=1, bias=False), lambda m, a: m(a))}
    backends = ["torchvision", "sampling"] + (["detectron2"] if has_detectron2_C() else [])
    for backend in backends:
        convs[f"dcnv1_{backend}"] = (DeformConv(c, c, 3, padding=1, backend=backend), lambda m, a: m(a, offset))
        convs[f"dcnv2_{backend}"] = (ModulatedDeformConv(c, c, 3, padding=1, bias=False, backend=backend),
                                     lambda m, a: m(a, offset, mask))
    fwds, fwd_bwds = {}, {}
    for name, (module, call) in convs.items():
        module = module.to(device)
        xin = x.clone().requires_grad_()

        def fwd(module=module, call=call, xin=xin):
            with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                call(module, xin)

        def fwd_bwd(module=module, call=call, xin=xin):
            with torch.autocast(device.type, enabled=amp):
                out = call(module, xin)
            out.float().sum().backward()

        fwds[name], fwd_bwds[name] = fwd, fwd_bwd
    t_fwd = _time_interleaved(fwds, device, warmup, iters)
    t_fwd_bwd = _time_interleaved(fwd_bwds, device, warmup, iters)
    results = {
        name: {
            "forward_ms": t_fwd[name][0],
            "forward_backward_ms": t_fwd_bwd[name][0],
            "forward_min_ms": t_fwd[name][1],
            "forward_backward_min_ms": t_fwd_bwd[name][1],
        }
        for name in convs
    }
    base = results["conv2d"]
    for name, r in results.items():
        r["forward_ratio_vs_conv2d"] = r["forward_ms"] / base["forward_ms"]
        r["forward_backward_ratio_vs_conv2d"] = r["forward_backward_ms"] / base["forward_backward_ms"]
    return results


def _quickstart_batch(cfg, device, n_images, size_hw, seed=0):
    """detectron2 training inputs: random images with two boxes / masks each (classes from the config)."""
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = size_hw
    batch = []
    for _ in range(n_images):
        inst = Instances((h, w))
        boxes = torch.tensor([[0.1 * w, 0.15 * h, 0.55 * w, 0.6 * h], [0.4 * w, 0.35 * h, 0.9 * w, 0.85 * h]])
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[i, y0:y1, x0:x1] = True
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (2,), generator=g)
        inst.gt_masks = BitMasks(masks)
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        batch.append({"image": image.to(device), "instances": inst.to(device), "height": h, "width": w})
    return batch


def bench_train_step(config, device, backends, warmup, iters, n_images=4, size_hw=(192, 256)):
    """ms per SGD step (forward, losses, backward, optimizer step) of ``config`` per DEFORM_BACKEND, and the same
    model with plain convs (DEFORM_ON_PER_STAGE all False). Same seed, same weights, same inputs."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from cardd_d2.engine import setup_cfg

    variants = [(b, ["MODEL.RESNETS.DEFORM_BACKEND", b]) for b in backends]
    variants.append(("plain_conv", ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, False, False, False]"]))
    steps = {}
    for name, opts in variants:
        cfg = setup_cfg(config, ["MODEL.DEVICE", device.type] + opts)
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        batch = _quickstart_batch(cfg, device, n_images, size_hw)
        # a non-zero offset branch, so the deformable convs sample off the integer grid as after some training
        with torch.no_grad():
            for mod_name, mod in model.named_modules():
                if mod_name.endswith("conv2_offset"):
                    torch.nn.init.normal_(mod.weight, std=0.01)

        def step(model=model, opt=opt, batch=batch):
            with EventStorage(0):
                losses = model(batch)
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()

        steps[name] = step
    times = _time_interleaved(steps, device, warmup, iters)
    results = {name: {"train_step_ms": t[0], "train_step_min_ms": t[1]} for name, t in times.items()}
    first = results[backends[0]]
    for r in results.values():
        r[f"ratio_vs_{backends[0]}"] = r["train_step_ms"] / first["train_step_ms"]
        r[f"min_ratio_vs_{backends[0]}"] = r["train_step_min_ms"] / first["train_step_min_ms"]
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", type=int, nargs=4, action="append", default=None, metavar=("N", "C", "H", "W"),
                   help="feature shape (repeatable); default: the quickstart's DCN shapes + one larger on CPU")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--amp", action="store_true", help="fp16 (CUDA) / bf16 (CPU) autocast")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--train-step", action="store_true", help="also time a training step of --config per backend")
    p.add_argument("--train-only", action="store_true", help="only the training-step benchmark")
    p.add_argument("--config", default=QUICKSTART_DCN, help="config for --train-step (default: quickstart DCN+)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(s) for s in args.shape] if args.shape else (CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
    iters = args.iters if args.iters is not None else (50 if device.type == "cuda" else 5)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "kernel": "3x3, stride 1, pad 1, C->C",
        "amp": args.amp,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "iters": iters,
        "backend": deform_backend_info(),
        "results": [],
    }
    if not args.train_only:
        for shape in shapes:
            report["results"].append({"shape": list(shape), **bench(device, shape, warmup, iters, args.amp)})
    if args.train_step or args.train_only:
        backends = ["torchvision", "sampling"] + (["detectron2"] if has_detectron2_C() else []) + ["auto"]
        report["train_step"] = {
            "config": os.path.relpath(args.config),
            "images": "4 x 3x192x256 (random, 2 boxes/masks each)",
            "results": bench_train_step(args.config, device, backends, max(1, warmup), iters),
        }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
