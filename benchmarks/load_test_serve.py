#!/usr/bin/env python
"""Load test of `cardd serve` on 127.0.0.1: p50/p95 latency and throughput for each worker count; JSON.

For each ``--workers`` value a `cardd serve` process is started on a free 127.0.0.1 port (``--queue-size`` at least
the client concurrency, so a correct service refuses nothing), warmed with one request per worker, then sent
``--requests`` PNG uploads of random pixels from ``--concurrency`` client threads. Everything is bounded: the server
must come up within ``--startup-timeout`` s, each request has ``--request-timeout`` s, and no request is started
after ``--max-seconds`` (the JSON then says how many were sent). Random weights unless --weights is given.

    python benchmarks/load_test_serve.py --config-file configs/CarDD/mask_rcnn_R_50_FPN.yaml --workers 1 2 \\
        --requests 16 --concurrency 4 --image-size 320x240 --output benchmarks/results/serve_load_cpu.json \\
        INPUT.MIN_SIZE_TEST 240 INPUT.MAX_SIZE_TEST 320

exit status: 0 every request got HTTP 200; 1 some request failed (status, timeout or connection error: listed in
the JSON); 2 usage error or the server did not start.
"""
import argparse
import concurrent.futures
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from bench_output import emit_json  # benchmarks/ (the script folder) is on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(width, height, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _percentile(values, q):
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(q / 100.0 * len(v)) - 1))] if v else None


def _start_server(args, workers, weights, log):
    port = _free_port()
    cmd = [sys.executable, "-m", "cardd_cli", "serve", "--config-file", args.config_file, "--weights", weights,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--queue-size", str(max(args.concurrency, 1)), "--request-timeout", str(args.request_timeout)]
    proc = subprocess.Popen(cmd + list(args.opts), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return proc, f"http://127.0.0.1:{port}"


def _wait_up(httpx, url, proc, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).json().get("model_loaded"):
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    return False


def _stop(proc):
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_one(args, workers, weights, images, log_path):
    import httpx

    with open(log_path, "w") as log:
        proc, url = _start_server(args, workers, weights, log)
        try:
            if not _wait_up(httpx, url, proc, args.startup_timeout):
                why = (f"exited with status {proc.returncode}" if proc.poll() is not None
                       else f"did not start within {args.startup_timeout:g} s")
                raise RuntimeError(f"cardd serve --workers {workers} {why}; see {log_path}:\n"
                                   + open(log_path).read()[-2000:])

            def post(k):
                t0 = time.perf_counter()
                try:
                    r = httpx.post(url + "/assess", files={"file": (f"load{k}.png", images[k % len(images)],
                                                                    "image/png")}, timeout=args.request_timeout)
                    status, detail = r.status_code, (None if r.status_code == 200 else r.text[:300])
                except httpx.HTTPError as e:
                    status, detail = None, f"{type(e).__name__}: {e}"
                return k, status, detail, time.perf_counter() - t0

            warm = [post(k) for k in range(workers)]
            bad_warm = [w for w in warm if w[1] != 200]
            start, deadline = time.perf_counter(), time.perf_counter() + args.max_seconds
            results, sent = [], 0
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as ex:
                pending = set()
                while sent < args.requests or pending:
                    while sent < args.requests and len(pending) < args.concurrency and time.perf_counter() < deadline:
                        pending.add(ex.submit(post, sent))
                        sent += 1
                    if not pending:
                        break
                    done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    results += [f.result() for f in done]
            wall = time.perf_counter() - start
            health = httpx.get(url + "/health", timeout=10).json()
        finally:
            _stop(proc)
    lat = [r[3] for r in results if r[1] == 200]
    failed = [{"request": k, "status": s, "detail": d} for k, s, d, _ in results if s != 200]
    failed += [{"request": f"warm-up {k}", "status": s, "detail": d} for k, s, d, _ in bad_warm]
    return {"workers": workers, "requests_sent": sent, "requests_ok": len(lat), "failed": len(failed),
            "failures": failed[:20], "wall_s": round(wall, 3), "throughput_rps": round(len(lat) / wall, 4),
            "latency_p50_ms": round(_percentile(lat, 50) * 1000, 1) if lat else None,
            "latency_p95_ms": round(_percentile(lat, 95) * 1000, 1) if lat else None,
            "server_health_after": health["workers"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--weights", default="", metavar="FILE", help="detector checkpoint (default: random init)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4, help="client threads sending requests at once")
    p.add_argument("--image-size", default="320x240", metavar="WxH")
    p.add_argument("--max-seconds", type=float, default=600.0, help="no new request after this long (per run)")
    p.add_argument("--request-timeout", type=float, default=300.0)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--output", default=None, metavar="FILE", help="JSON file (also printed)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides for the server")
    args = p.parse_args(argv)
    try:
        width, height = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        p.error(f"--image-size: expected WxH, got {args.image_size!r}")
    if args.requests < 1 or args.concurrency < 1 or min(args.workers) < 1:
        p.error("--requests, --concurrency and --workers must be at least 1")
    from bench_assessment import _random_weights  # this folder is the script's own: sys.path[0]

    weights = args.weights or _random_weights(args.config_file, args.opts)
    images = [_png(width, height, seed) for seed in range(4)]
    load_before = os.getloadavg()
    logs = tempfile.mkdtemp(prefix="load_test_serve_")
    runs = []
    try:
        for w in args.workers:
            runs.append(run_one(args, w, weights, images, os.path.join(logs, f"serve_workers{w}.log")))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "server_health_after"}), file=sys.stderr)
    except RuntimeError as e:
        print(f"load_test_serve: error: {e}", file=sys.stderr)
        return 2
    import torch

    res = {"benchmark": "serve_load", "host": "127.0.0.1", "image_size": [width, height], "requests": args.requests,
           "concurrency": args.concurrency, "config_file": os.path.relpath(os.path.abspath(args.config_file), REPO),
           "overrides": list(args.opts), "weights": args.weights or "random init",
           "cpu_count": os.cpu_count(),
           "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}, "torch_threads_per_server": os.environ.get("OMP_NUM_THREADS", "torch default"),
           "torch": torch.__version__, "python": platform.python_version(), "runs": runs}
    emit_json(res, args.output)
    return 1 if any(r["failed"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
