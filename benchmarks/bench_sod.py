#!/usr/bin/env python
"""Speed of the SOD models (CSNet, PoolNet, U2-Net, U2-Netp, SGL-KRN): training step, inference latency, throughput.

    python benchmarks/bench_sod.py --quick                                  # CPU smoke run (reduced batch / size)
    python benchmarks/bench_sod.py --device cuda --compare-reference --output sod.json

* Training step (paper batch and input size, Table VII / the reference scripts): zero_grad, forward, the model's
  reference loss (cardd_sod.build_sod_loss), backward, Adam step; median of --reps after --warmup.
  U2-Net(p): batch 12 at 288x288; CSNet: batch 16 at 224x224 (+ dynamic weight decay term, reference Adam groups);
  PoolNet / SGL-KRN: batch 1 at 320x400, one Adam step per image (the references accumulate 10 images per step).
* Inference: eval mode, no_grad, batch 1 latency (ms) and batch --throughput-batch (32) throughput (img/s) at the
  test size (U2-Net 320x320, CSNet 224x224, PoolNet / SGL-KRN 320x400).
* Map saving: ms per map for the model's rule (cardd_sod.map_saving: resize back to the image size, uint8
  conversion, PNG write) from a sigmoid map at the network output size to an image of --save-size (default 720x1280,
  120x160 with --quick); one row per model, precision-independent.
* Precisions: fp32 and AMP.  AMP = bf16 autocast by default (fp16 overflows in CSNet's x100 weights and makes U2-Net's
  loss scaler skip steps, see performance.md); --amp-dtype fp16 uses fp16 + GradScaler.  On CPU AMP (bf16) only
  when asked with --precisions fp32 amp.
* --quick: CPU-sized run (batch <= 2, small inputs, 1 warm-up, 2 reps, throughput batch 2).
* --compare-reference: adds performance.md's anchors for the reference implementations (H200, torch 2.11) and,
  for full-size CUDA runs, the ratio ours / reference (only meaningful on the same kind of card).
Output: JSON (stdout, and --output if given).  Not a test; never asserts on timings.
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

from cardd_sod import build_sod_loss, build_sod_model
from cardd_sod.data.edges import mask_to_edge
from cardd_sod.map_saving import saliency_to_uint8, write_map
from cardd_sod.models import get_sod_spec
from bench_output import emit_json  # benchmarks/ (the script folder) is on sys.path

# name -> training batch, training size, inference size, Adam settings (paper Table VII / reference scripts)
PAPER = {
    "u2net": {"batch": 12, "train_size": (288, 288), "infer_size": (320, 320), "lr": 1e-3, "wd": 0.0},
    "u2netp": {"batch": 12, "train_size": (288, 288), "infer_size": (320, 320), "lr": 1e-3, "wd": 0.0},
    "csnet": {"batch": 16, "train_size": (224, 224), "infer_size": (224, 224), "lr": 1e-4, "wd": 5e-3},
    "poolnet": {"batch": 1, "train_size": (320, 400), "infer_size": (320, 400), "lr": 5e-5, "wd": 5e-4},
    "sgl_krn": {"batch": 1, "train_size": (320, 400), "infer_size": (320, 400), "lr": 5e-5, "wd": 5e-4},
}
QUICK = {
    "u2net": {"batch": 2, "train_size": (96, 96), "infer_size": (96, 96)},
    "u2netp": {"batch": 2, "train_size": (96, 96), "infer_size": (96, 96)},
    "csnet": {"batch": 2, "train_size": (64, 64), "infer_size": (64, 64)},
    "poolnet": {"batch": 1, "train_size": (128, 128), "infer_size": (128, 128)},
    "sgl_krn": {"batch": 1, "train_size": (128, 128), "infer_size": (128, 128)},
}

# performance.md: reference implementations, random init; GPU = one H200, torch 2.11.0+cu130, cudnn.benchmark on.
REFERENCE_ANCHORS = {
    "source": "the authors' reference SOD model code, random init, measured on a 2-core CPU machine",
    "gpu": "NVIDIA H200, torch 2.11.0+cu130, cuDNN 9.19, cudnn.benchmark on; median of 20 after 5 warm-up",
    "cpu": "2 cores, batch 1, eval",
    "models": {
        "u2net": {"train_fp32_ms": 85.6, "train_bf16_ms": 94.0, "infer_bs1_fp32_ms": 13.9, "infer_bs32_fp32_img_s": 422,
                  "cpu_infer_bs1_ms_320": 599},
        "u2netp": {"train_fp32_ms": 72.6, "train_bf16_ms": 84.5, "infer_bs1_fp32_ms": 15.4,
                   "infer_bs32_fp32_img_s": 771, "cpu_infer_bs1_ms_320": 333},
        "csnet": {"train_fp32_ms": 128.1, "train_bf16_ms": 107.2, "infer_bs1_fp32_ms": 20.1,
                  "infer_bs32_fp32_img_s": 934, "cpu_infer_bs1_ms_224": 141},
        "poolnet": {"train_fp32_ms": 28.6, "train_bf16_ms": 29.8, "infer_bs1_fp32_ms": 9.0,
                    "infer_bs32_fp32_img_s": 270, "cpu_infer_bs1_ms_320": [613, 648]},
        "sgl_krn": {"train_fp32_ms": 30.9, "train_bf16_ms": 46.5, "infer_bs1_fp32_ms": 9.9,
                    "infer_bs32_fp32_img_s": 238, "cpu_infer_bs1_ms_320": [751, 781]},
    },
    "notes": "fp16 autocast overflows in CSNet (x100 weights) and makes U2-Net's loss scaler skip steps; bf16 is safe. "
             "PoolNet/SGL-KRN step Adam per image here (the references accumulate 10 images per step). "
             "Compare like with like: same card, same run.",
}


def _parse_size(s: str):
    h, w = s.lower().split("x")
    return int(h), int(w)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--models", nargs="+", default=list(PAPER), choices=list(PAPER))
    p.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "amp"],
                   help="default: fp32 and amp on CUDA, fp32 on CPU")
    p.add_argument("--amp-dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--quick", action="store_true", help="reduced batch / sizes / repetitions (CPU smoke run)")
    p.add_argument("--train-size", type=_parse_size, default=None, help="override every model's HxW for training")
    p.add_argument("--infer-size", type=_parse_size, default=None, help="override every model's HxW for inference")
    p.add_argument("--train-batch", type=int, default=None, help="override every model's training batch")
    p.add_argument("--throughput-batch", type=int, default=None, help="default 32 (2 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="default 5 (1 with --quick)")
    p.add_argument("--reps", type=int, default=None, help="default 20 (2 with --quick)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-infer", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-save", action="store_true")
    p.add_argument("--save-size", type=_parse_size, default=None, help="image HxW for map saving")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--compare-reference", action="store_true", help="add performance.md's reference anchors")
    p.add_argument("--output", default=None)
    return p


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, warmup, reps):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), times


def _inputs(name, batch, size, device, gen):
    h, w = size
    x = torch.randn(batch, 3, h, w, generator=gen)
    if get_sod_spec(name).expects_0_255:
        x = x * 50.0
    y = torch.zeros(batch, 1, h, w)
    y[:, :, h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1.0
    return x.to(device), y.to(device)


def _amp_ctx(device, precision, amp_dtype):
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if (amp_dtype == "bf16" or device.type == "cpu") else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def bench_train(name, model, cfg, device, precision, args, gen):
    x, y = _inputs(name, cfg["batch"], cfg["train_size"], device, gen)
    edge = mask_to_edge(y) if name == "sgl_krn" else None
    model.train()
    loss_fn = build_sod_loss(get_sod_spec(name).loss)
    spec = get_sod_spec(name)
    groups = (spec.param_groups(model, cfg["wd"]) if spec.param_groups is not None else
              [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg["wd"]}])
    opt = torch.optim.Adam(groups, lr=cfg["lr"], betas=(0.9, 0.99) if name == "csnet" else (0.9, 0.999))
    use_scaler = precision == "amp" and device.type == "cuda" and args.amp_dtype == "fp16"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with _amp_ctx(device, precision, args.amp_dtype):
            out = model(x)
        loss, _ = loss_fn(out, y, edge, model=model)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        losses.append(loss.detach())

    ms, times = _time(step, device, args.warmup, args.reps)
    finite = bool(torch.stack(losses).isfinite().all().item())
    return {"kind": "train_step", "batch": cfg["batch"], "size": list(cfg["train_size"]), "ms_median": ms,
            "ms_all": times, "img_per_s": 1000.0 * cfg["batch"] / ms, "loss_finite": finite,
            "loss_last": float(losses[-1].float().item())}


def bench_infer(name, model, size, batch, device, precision, args, gen):
    x, _ = _inputs(name, batch, size, device, gen)
    model.eval()

    def run():
        with torch.no_grad(), _amp_ctx(device, precision, args.amp_dtype):
            out = model(x)
            model.saliency(out)

    ms, times = _time(run, device, args.warmup, args.reps)
    kind = "infer_latency_bs1" if batch == 1 else "infer_throughput"
    return {"kind": kind, "batch": batch, "size": list(size), "ms_median": ms, "ms_all": times,
            "img_per_s": 1000.0 * batch / ms}


def bench_save(name, size, args):
    import tempfile
    pp = get_sod_spec(name).preprocess
    net = pp.size or size  # full-resolution models predict at the image size
    gen = torch.Generator().manual_seed(0)  # its own: the other rows' inputs do not depend on --skip-save
    sal = torch.sigmoid(torch.randn(1, 1, *net, generator=gen) * 3)[0, 0]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "map.png")
        ms, times = _time(lambda: write_map(path, saliency_to_uint8(sal, size, pp.save_rule)), torch.device("cpu"),
                          args.warmup, args.reps)
    return {"kind": "save_map", "rule": pp.save_rule, "net_size": list(net), "size": list(size), "ms_median": ms,
            "ms_all": times}


def main(argv=None):
    args = get_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precisions = args.precisions or (["fp32", "amp"] if device.type == "cuda" else ["fp32"])
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    args.reps = args.reps if args.reps is not None else (2 if args.quick else 20)
    tp_batch = args.throughput_batch or (2 if args.quick else 32)
    save_size = args.save_size or ((120, 160) if args.quick else (720, 1280))
    gen = torch.Generator().manual_seed(0)

    load_start = os.getloadavg()[0]  # timings on a shared machine: the load says how much they can be trusted
    results = []
    for name in args.models:
        cfg = dict(PAPER[name])
        if args.quick:
            cfg.update(QUICK[name])
        if args.train_size:
            cfg["train_size"] = args.train_size
        if args.infer_size:
            cfg["infer_size"] = args.infer_size
        if args.train_batch:
            cfg["batch"] = args.train_batch
        torch.manual_seed(0)
        model = build_sod_model(name).to(device)
        if name == "csnet":  # BN statistics must come from one train-mode forward, else eval gives NaN (x100)
            model.train()
            with torch.no_grad():
                model(_inputs(name, 2, cfg["infer_size"], device, gen)[0])
        for precision in precisions:
            rows = []
            try:
                if not args.skip_infer:
                    rows.append(bench_infer(name, model, cfg["infer_size"], 1, device, precision, args, gen))
                    if not args.skip_throughput:
                        rows.append(bench_infer(name, model, cfg["infer_size"], tp_batch, device, precision, args,
                                                gen))
                if not args.skip_train:
                    rows.append(bench_train(name, model, cfg, device, precision, args, gen))
            except RuntimeError as exc:  # e.g. out of memory: report, keep going
                rows.append({"kind": "error", "error": str(exc)[:500]})
            for r in rows:
                r.update({"model": name, "device": device.type, "precision": precision if precision == "fp32"
                          else ("bf16" if (args.amp_dtype == "bf16" or device.type == "cpu") else "fp16")})
                results.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "ms_all"}), file=sys.stderr, flush=True)
        if not args.skip_save:
            r = bench_save(name, save_size, args)
            r.update({"model": name, "device": "cpu"})
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "ms_all"}), file=sys.stderr, flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    report = {
        "benchmark": "bench_sod",
        "env": {"torch": torch.__version__, "python": platform.python_version(), "device": device.type,
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                "threads": torch.get_num_threads(), "quick": args.quick, "amp_dtype": args.amp_dtype,
                "cpu_count": os.cpu_count(), "load_avg_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
        "results": results,
    }
    if args.compare_reference:
        report["reference_anchors"] = REFERENCE_ANCHORS
        if device.type == "cuda" and not args.quick:
            ratios = {}
            for r in results:
                anchor = REFERENCE_ANCHORS["models"].get(r["model"], {})
                key = {("train_step", "fp32"): "train_fp32_ms", ("train_step", "bf16"): "train_bf16_ms",
                       ("infer_latency_bs1", "fp32"): "infer_bs1_fp32_ms"}.get((r["kind"], r["precision"]))
                if key and key in anchor:
                    ratios[f"{r['model']}:{key}"] = r["ms_median"] / anchor[key]
                if r["kind"] == "infer_throughput" and r["precision"] == "fp32" and r["batch"] == 32:
                    ratios[f"{r['model']}:infer_bs32_fp32_img_s"] = r["img_per_s"] / anchor["infer_bs32_fp32_img_s"]
            report["ratio_ours_over_reference"] = ratios
            report["ratio_note"] = ("ms ratios > 1 = slower than the reference anchor, img/s ratios > 1 = faster; "
                                    "anchors were measured on an H200 - compare only on the same card")
    emit_json(report, args.output, indent=2)
    return report


if __name__ == "__main__":
    main()
