#!/usr/bin/env python
"""Deformable conv inside onnxruntime: cardd's exported "sampling" form (GridSample + MatMul, opset 17) vs ONNX's own
DeformConv operator (opset 19), same weights and inputs, CPU; ms per call and the largest output difference; JSON.

    python benchmarks/bench_onnx_deform.py --output benchmarks/results/onnx_deform_conv_cpu.json

Default shapes: the 3x3 convs of DCN+ R-50's res3 / res4 / res5 blocks at 1333x800 (batch 1). The two take turns
call by call; median of --reps after --warmup.
"""
import argparse
import io
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from cardd_d2.modeling.layers.deform_conv import DeformConv
from bench_output import emit_json  # benchmarks/ (the script folder) is on sys.path

SHAPES = [(1, 128, 100, 168), (1, 256, 50, 84), (1, 512, 25, 42)]


class _Layer(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x, offset):
        return self.conv(x, offset)


def _sampling_session(conv, x, off, ort, opts):
    buf = io.BytesIO()
    torch.onnx.export(_Layer(conv).eval(), (x, off), buf, dynamo=False, opset_version=17,
                      input_names=["x", "offset"], output_names=["y"])
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def _native_session(conv, shape, ort, opts):
    from onnx import TensorProto, helper, numpy_helper

    n, c, h, w = shape
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                            strides=[1, 1], dilations=[1, 1], group=1, offset_group=1)
    graph = helper.make_graph(
        [node], "deform_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w]),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, [n, 18, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, h, w])],
        initializer=[numpy_helper.from_array(conv.weight.detach().numpy(), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--output", default=None, metavar="FILE")
    args = p.parse_args(argv)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if args.threads:
        opts.intra_op_num_threads = args.threads
    rows = []
    for shape in SHAPES:
        n, c, h, w = shape
        torch.manual_seed(0)
        conv = DeformConv(c, c, 3, padding=1, bias=False, backend="sampling").eval()
        x = torch.rand(shape)
        off = torch.randn(n, 18, h, w) * 2
        feeds = {"x": x.numpy(), "offset": off.numpy()}
        sessions = {"sampling (GridSample + MatMul)": _sampling_session(conv, x, off, ort, opts),
                    "ONNX DeformConv": _native_session(conv, shape, ort, opts)}
        outs = {k: s.run(None, feeds)[0] for k, s in sessions.items()}
        with torch.no_grad():
            ref = conv(x, off).numpy()
        times = {k: [] for k in sessions}
        for i in range(args.warmup + args.reps):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, feeds)
                if i >= args.warmup:
                    times[k].append((time.perf_counter() - t) * 1000)
        row = {"shape": list(shape), "ms": {k: round(statistics.median(v), 2) for k, v in times.items()},
               "max_abs_diff_vs_torch": {k: float(np.abs(o - ref).max()) for k, o in outs.items()}}
        a, b = row["ms"].values()
        row["deformconv_over_sampling"] = round(b / a, 3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    res = {"benchmark": "onnx_deform_conv", "device": "cpu", "onnxruntime": ort.__version__, "torch": torch.__version__,
           "cpu_count": os.cpu_count(), "load_average_1_5_15min": os.getloadavg(), "python": platform.python_version(),
           "results": rows}
    emit_json(res, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
