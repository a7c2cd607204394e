#!/usr/bin/env bash
# CPU benchmark runs whose JSON is committed under benchmarks/results/ and summarised in the README.
# Run on an otherwise idle machine: every ratio is measured inside one process, absolute times depend on the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${CARDD_VENV:-$ROOT/.venv}/bin/python"
OUT="$ROOT/benchmarks/results"
mkdir -p "$OUT"
cd "$ROOT"
"$PY" benchmarks/bench_deform_conv.py --device cpu --train-step > "$OUT/deform_conv_cpu.json"
"$PY" benchmarks/bench_detection.py --device cpu --quick --models mask_rcnn dcn dcn_plus --depths 50 101 --reps 3 \
  --output "$OUT/detection_cpu_quick.json" > /dev/null
# SOD: batch-1 eval latency at the sizes of performance.md's CPU anchors (CSNet 224x224, the others 320x320).
"$PY" benchmarks/bench_sod.py --device cpu --models csnet --infer-size 224x224 --skip-train --skip-throughput \
  --warmup 2 --reps 5 --compare-reference --output "$OUT/sod_cpu_latency_csnet.json" > /dev/null
"$PY" benchmarks/bench_sod.py --device cpu --models poolnet u2net u2netp sgl_krn --infer-size 320x320 --skip-train \
  --skip-throughput --warmup 2 --reps 5 --compare-reference --output "$OUT/sod_cpu_latency.json" > /dev/null
"$PY" benchmarks/bench_sod.py --device cpu --quick --skip-infer --skip-throughput --output "$OUT/sod_cpu_train_quick.json" > /dev/null
"$PY" benchmarks/bench_assessment.py --devices cpu --images 2 --output "$OUT/assessment_cpu.json" > /dev/null
OMP_NUM_THREADS=1 "$PY" benchmarks/load_test_serve.py --config-file configs/CarDD/mask_rcnn_R_50_FPN.yaml --workers 1 2 \
  --requests 12 --concurrency 4 --image-size 320x240 --output "$OUT/serve_load_cpu.json" \
  INPUT.MIN_SIZE_TEST 240 INPUT.MAX_SIZE_TEST 320 > /dev/null
"$PY" benchmarks/bench_runtime.py --models dcn_plus_R_50 dcn_plus_R_101 --images 2 --warmup 1 \
  --output "$OUT/runtime_cpu.json" > /dev/null
"$PY" benchmarks/bench_onnx_deform.py --output "$OUT/onnx_deform_conv_cpu.json" > /dev/null
echo "wrote $OUT"
