#!/usr/bin/env bash
# The whole GPU check, for a machine with an NVIDIA GPU, python3, torch (2.11 or newer) and triton, and no
# network: descend runs from this working tree (nothing is installed), every Triton kernel is checked against
# the reference chain on CUDA tensors, descend's CUDA tests run, and the step time is measured against
# torch.optim's fused and foreach paths. Tables and raw numbers go to $OUT (else benchmarks/). About 8 minutes
# at most; it stops itself at 9. `--smoke` runs the same on the CPU in Triton's interpreter (CI does).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || PY=python
timeout --signal=INT --kill-after=20 540 "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
status=$?
[ "$status" = 124 ] && echo "gpu_check: stopped at 9 minutes" >&2
exit "$status"
