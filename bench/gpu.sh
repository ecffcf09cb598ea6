#!/usr/bin/env bash
# The benchmark suite on a GPU machine, as one prepared script (figures recorded with the card's
# name in each result's evidence). Run from the repository root after `make install`:
#   bash bench/gpu.sh            -> bench/results/gpu/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=bench/results/gpu
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -m bench.bench_if --device cuda --out "$OUT/bench_if.json"
$PY -m bench.bench_gpu_share --out "$OUT/bench_gpu_share.json"
$PY -m bench.bench_sweep --out "$OUT/bench_sweep.json"
