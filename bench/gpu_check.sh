#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py; docs/scale-out.md): one command of at most
# 8 minutes on one H100, run whenever a GPU machine is available.
#   bash bench/gpu_check.sh              # writes bench/results/gpu.md
#   bash bench/gpu_check.sh --rehearse   # on the CPU, every size shrunk (gpu-rehearsal.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec timeout 480 env OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 "$PY" bench/gpu_check.py "$@"
