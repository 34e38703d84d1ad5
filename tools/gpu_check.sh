#!/usr/bin/env bash
# The prepared device check (issue 13; tools/gpu_check.py says what each part measures). Under 5 minutes on one
# GPU; on a machine without one it runs the CPU parts and marks the GPU parts skipped, so CI can run it too.
#   tools/gpu_check.sh [OUT.json]     (default: $OUT/gpu_check.json on the device machine, else runs/gpu_check.json, ignored by git)
# Interpreter: $PYTHON, else .venv/bin/python, else python3 (the device machine brings its own torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p runs
# The device machine has torch but not this package installed: the checkout is the package.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" tools/gpu_check.py "${1:-${OUT:-runs}/gpu_check.json}"
