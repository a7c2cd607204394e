#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs everything cardd needs.
# Idempotent: a second run only checks the stamp file and returns.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CARDD_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.cardd-setup-v1"
REQ_HASH=$(cat "$ROOT/scripts/setup_env.sh" "$ROOT/requirements.txt" "$ROOT/setup.py" 2>/dev/null | sha1sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then
  exit 0
fi

echo "[setup] creating/updating virtual environment at $VENV" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade "pip<27" >&2

# PyTorch: CUDA build that also runs on CPU (environment.md).
"$VPY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" >&2
"$VPY" -m pip install -q -r "$ROOT/requirements.txt" >&2

# detectron2: use an existing install (e.g. official, built from source) if importable;
# otherwise the pure-Python part of sal-detectron2 (upstream detectron2 snapshot) for CPython 3.10,
# installed into its own folder and put on the path with a .pth file.
if ! "$VPY" -c "import detectron2" 2>/dev/null; then
  SITE=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  D2DIR="$VENV/detectron2-py"
  rm -rf "$D2DIR"
  "$VPY" -m pip install -q --no-deps --only-binary=:all: --python-version 3.10 \
      --target "$D2DIR" "sal-detectron2==0.7.2" >&2
  echo "$D2DIR" > "$SITE/detectron2-py.pth"
fi

"$VPY" -m pip install -q --no-deps -e "$ROOT" >&2
"$VPY" -c "import torch, torchvision, detectron2, cardd_d2" >&2
echo "$REQ_HASH" > "$STAMP"
echo "[setup] done" >&2
