#!/usr/bin/env bash
# The README's test command: set up (or reuse) .venv, then run the whole pytest suite on CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "${CARDD_VENV:-$ROOT/.venv}/bin/python" -m pytest -n "${CARDD_TEST_WORKERS:-2}" "$@"
