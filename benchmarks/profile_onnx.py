#!/usr/bin/env python
"""Where an exported detector's time goes in onnxruntime: kernel time per ONNX operator type (its profiler), CPU.

    python benchmarks/profile_onnx.py --model dcn_plus_R_50 [--runs 2] [--output FILE]

Random weights, one random image at the model's test size (800x1216 for the paper configs), exported to a temporary
folder; prints (and writes as JSON) ms per run and the share of all kernel time for each operator type.
"""
import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

from bench_runtime import MODELS, REPO  # this folder is the script's own: sys.path[0]
from bench_output import emit_json  # benchmarks/ (the script folder) is on sys.path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dcn_plus_R_50", choices=sorted(MODELS))
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--output", default=None, metavar="FILE")
    args = p.parse_args(argv)
    import onnxruntime as ort
    from bench_assessment import _random_weights

    from cardd_d2.assessment.predictor import setup_cfg
    from cardd_d2.export import export_model

    config = os.path.join(REPO, MODELS[args.model])
    cfg = setup_cfg(config, weights=_random_weights(config, []), device="cpu")
    d = tempfile.mkdtemp(prefix="profile_onnx_")
    export_model(cfg, d, "onnx")
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(d, "profile")
    sess = ort.InferenceSession(os.path.join(d, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    h = cfg.INPUT.MIN_SIZE_TEST
    w = min(int(round(h * 1.52)) // 32 * 32, cfg.INPUT.MAX_SIZE_TEST)
    x = (np.random.default_rng(0).random((3, h, w)) * 255).astype("float32")
    for _ in range(args.runs):
        sess.run(None, {"image": x})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    rows = [{"op": op, "ms_per_run": round(us / 1e3 / args.runs, 1), "share": round(us / total, 4)}
            for op, us in per_op.most_common()]
    res = {"benchmark": "profile_onnx", "model": args.model, "input": [3, h, w], "runs": args.runs,
           "onnxruntime": ort.__version__, "load_average_1_5_15min": os.getloadavg(), "ops": rows}
    emit_json(res, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
