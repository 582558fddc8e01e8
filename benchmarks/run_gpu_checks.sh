#!/usr/bin/env bash
# One short script for a lent GPU machine: the CUDA tests, then the GPU tables.
# Usage (from the repository root): bash benchmarks/run_gpu_checks.sh [OUT_DIR]
set -uo pipefail
out=${1:-${OUT:-/tmp/flipad_gpu}}
mkdir -p "$out"
python -m pip install -q -e ".[test]" >"$out/install.log" 2>&1
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
python -m pytest -q -m cuda -rs >"$out/cuda_tests.txt" 2>&1; echo "cuda tests rc=$?" >>"$out/cuda_tests.txt"
timeout 240 python -m benchmarks.bench_inversion --results-dir "$out" --device cuda --only dcgan --n-samples 64 \
    >"$out/bench_inversion_cuda.md" 2>&1
timeout 180 python -m benchmarks.bench_detector --results-dir "$out" --device cuda >"$out/bench_detector_cuda.md" 2>&1
# CPU-vs-CUDA features and verdicts (a "device=cuda" row beside every CPU variant)
timeout 300 python -m benchmarks.bench_reproducibility --results-dir "$out" --quick >"$out/bench_reproducibility_cuda.md" 2>&1
tail -n 5 "$out"/*.txt "$out"/*.md
