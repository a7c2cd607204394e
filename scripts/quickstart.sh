#!/usr/bin/env bash
# The README's main job: set up (or reuse) .venv, then train + evaluate the quickstart model on CPU.
# Arguments are passed to tools/quickstart.py (e.g. --model mask_rcnn, --iters 100).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${CARDD_VENV:-$ROOT/.venv}/bin/python" tools/quickstart.py "$@"
