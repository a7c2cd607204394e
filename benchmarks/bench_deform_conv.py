#!/usr/bin/env python
"""Deformable conv (torchvision kernel, cardd modules) vs a plain conv of the same shape: ms per call, JSON.

    python benchmarks/bench_deform_conv.py                 # CPU, small shape
    python benchmarks/bench_deform_conv.py --device cuda   # performance.md shape 2x256x100x168, 3x3 256->256

Ratios are against the plain conv measured in the same process. With --amp the CUDA runs use fp16 autocast
(the deformable conv then computes in float32 internally). With detectron2._C importable, its compiled kernel is
measured too. Not a test: numbers depend on the machine.
"""
import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from cardd_d2.modeling.layers.deform_conv import (
    DeformConv,
    ModulatedDeformConv,
    deform_backend_info,
    get_deform_conv_classes,
    has_detectron2_C,
)

CPU_SHAPE = (1, 64, 32, 48)
CUDA_SHAPE = (2, 256, 100, 168)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, warmup, iters):
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def bench(device, shape, warmup, iters, amp):
    n, c, h, w = shape
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, device=device)
    offset = torch.randn(n, 18, h, w, device=device) * 2
    mask = torch.rand(n, 9, h, w, device=device)
    convs = {
        "conv2d": (nn.Conv2d(c, c, 3, padding=1, bias=False), lambda m, a: m(a)),
        "dcnv1_torchvision": (DeformConv(c, c, 3, padding=1), lambda m, a: m(a, offset)),
        "dcnv2_torchvision": (ModulatedDeformConv(c, c, 3, padding=1, bias=False), lambda m, a: m(a, offset, mask)),
    }
    if has_detectron2_C():
        d2_dcn, d2_mdcn = get_deform_conv_classes("detectron2")
        convs["dcnv1_detectron2"] = (d2_dcn(c, c, 3, padding=1), lambda m, a: m(a, offset))
        convs["dcnv2_detectron2"] = (d2_mdcn(c, c, 3, padding=1, bias=False), lambda m, a: m(a, offset, mask))
    results = {}
    for name, (module, call) in convs.items():
        module = module.to(device)
        xin = x.clone().requires_grad_()

        def fwd():
            with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                call(module, xin)

        def fwd_bwd():
            with torch.autocast(device.type, enabled=amp):
                out = call(module, xin)
            out.float().sum().backward()

        results[name] = {
            "forward_ms": _time(fwd, device, warmup, iters),
            "forward_backward_ms": _time(fwd_bwd, device, warmup, iters),
        }
    base = results["conv2d"]
    for name, r in results.items():
        r["forward_ratio_vs_conv2d"] = r["forward_ms"] / base["forward_ms"]
        r["forward_backward_ratio_vs_conv2d"] = r["forward_backward_ms"] / base["forward_backward_ms"]
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", type=int, nargs=4, default=None, metavar=("N", "C", "H", "W"))
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--amp", action="store_true", help="fp16 (CUDA) / bf16 (CPU) autocast")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(args.shape) if args.shape else (CUDA_SHAPE if device.type == "cuda" else CPU_SHAPE)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
    iters = args.iters if args.iters is not None else (50 if device.type == "cuda" else 5)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "shape": list(shape),
        "kernel": "3x3, stride 1, pad 1, C->C",
        "amp": args.amp,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "iters": iters,
        "backend": deform_backend_info(),
        "results": bench(device, shape, warmup, iters, args.amp),
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
