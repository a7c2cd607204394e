#!/usr/bin/env python
"""Exported vs eager detector on CPU: images/s, peak memory and agreement, in one process; JSON.

For each model (random weights): eager detectron2 (``DefaultPredictor``), the TorchScript export on torch and the ONNX
export on onnxruntime and on OpenVINO (all through ``ExportedPredictor``), on the same random BGR images. The
runtimes take turns image by image, so a change in machine load hits all of them alike. Memory: the process's
resident set (Linux ``/proc/self/status``) sampled every 10 ms while each runtime runs; ``rss_peak_mb`` is the
process's peak during those calls (every model stays loaded), ``rss_growth_mb`` the peak minus the resident set
before that runtime's first call. Agreement: detections count and largest score / box difference against eager.

    python benchmarks/bench_runtime.py --models dcn_plus_R_50 dcn_plus_R_101 --images 2 --warmup 1 \\
        --output benchmarks/results/runtime_cpu.json
"""
import argparse
import os
import platform
import sys
import tempfile
import threading
import time

import numpy as np
from bench_output import emit_json  # benchmarks/ (the script folder) is on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"dcn_plus_R_50": "configs/CarDD/dcn_plus_R_50_FPN.yaml",
          "dcn_plus_R_101": "configs/CarDD/dcn_plus_R_101_FPN.yaml",
          "mask_rcnn_R_50": "configs/CarDD/mask_rcnn_R_50_FPN.yaml"}


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class _PeakRSS:
    def __init__(self):
        self.peak, self._stop = 0.0, threading.Event()

    def __enter__(self):
        self.start = _rss_mb()
        self.peak = self.start
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def _compare(ref, got):
    a, b = ref["instances"], got["instances"]
    out = {"same_count": len(a) == len(b), "eager_detections": len(a), "detections": len(b)}
    if len(a) == len(b) and len(a):
        out["max_score_diff"] = float((a.scores - b.scores).abs().max())
        out["max_box_rel_diff"] = float(((a.pred_boxes.tensor - b.pred_boxes.tensor).abs()
                                         / a.pred_boxes.tensor.abs().clamp(min=1.0)).max())
        out["same_classes"] = bool((a.pred_classes == b.pred_classes).all())
    return out


def run_model(name, args, workdir):
    import torch
    from bench_assessment import _random_weights  # this folder is the script's own: sys.path[0]

    from cardd_d2.assessment.predictor import build_predictor, setup_cfg
    from cardd_d2.export import ExportedPredictor, export_model

    config = os.path.join(REPO, MODELS[name])
    weights = _random_weights(config, [])
    cfg = setup_cfg(config, weights=weights, device="cpu")
    predictors, export_s = {"torch eager": build_predictor(cfg)}, {}
    for fmt, runtime in (("torchscript", "torch"), ("onnx", "onnxruntime"), ("onnx", "openvino")):
        if (runtime if fmt == "onnx" else fmt) not in args.runtimes:
            continue
        label = f"{fmt} ({runtime})"
        d = os.path.join(workdir, f"{name}_{fmt}")
        if not os.path.isdir(d):
            t = time.perf_counter()
            export_model(cfg, d, fmt)
            export_s[fmt] = round(time.perf_counter() - t, 1)
        predictors[label] = ExportedPredictor(d, num_threads=torch.get_num_threads(), runtime=runtime)
    rng = np.random.default_rng(0)
    imgs = [(rng.random((args.height, args.width, 3)) * 255).astype(np.uint8) for _ in range(args.images)]
    for p in predictors.values():
        for im in imgs[: args.warmup]:
            p(im)
    times = {k: [] for k in predictors}
    mem = {k: {"rss_peak_mb": 0.0, "rss_growth_mb": 0.0} for k in predictors}
    agree = {k: [] for k in predictors if k != "torch eager"}
    for im in imgs:
        ref = None
        for k, p in predictors.items():
            with _PeakRSS() as m:
                t = time.perf_counter()
                out = p(im)
                times[k].append(time.perf_counter() - t)
            mem[k]["rss_peak_mb"] = round(max(mem[k]["rss_peak_mb"], m.peak), 1)
            mem[k]["rss_growth_mb"] = round(max(mem[k]["rss_growth_mb"], m.peak - m.start), 1)
            if k == "torch eager":
                ref = out
            else:
                agree[k].append(_compare(ref, out))
    eager = len(imgs) / sum(times["torch eager"])
    res = {}
    for k in predictors:
        ips = len(imgs) / sum(times[k])
        res[k] = {"images_per_s": round(ips, 4), "s_per_image": [round(t, 3) for t in times[k]],
                  "speedup_vs_eager": round(ips / eager, 3), **mem[k]}
        if k != "torch eager":
            res[k]["export_s"] = export_s[k.split(" ")[0]]
            res[k]["agreement"] = agree[k]
    return {"model": name, "config_file": MODELS[name], "score_threshold": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "runtimes": res}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["dcn_plus_R_50", "dcn_plus_R_101"], choices=sorted(MODELS))
    p.add_argument("--runtimes", nargs="+", default=["torchscript", "onnxruntime", "openvino"],
                   choices=["torchscript", "onnxruntime", "openvino"], help="exported runtimes next to eager torch")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--width", type=int, default=1333)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    p.add_argument("--output", default=None, metavar="FILE")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_runtime_") as workdir:
        results = [run_model(m, args, workdir) for m in args.models]
    import onnxruntime
    import openvino

    res = {"benchmark": "runtime", "device": "cpu", "image_size": [args.width, args.height], "images": args.images,
           "weights": "random init", "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
           "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "openvino": openvino.__version__, "python": platform.python_version(),
           "results": results}
    emit_json(res, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
