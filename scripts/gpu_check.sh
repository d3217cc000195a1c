#!/usr/bin/env bash
# The GPU check of pbw (training step, edit, CUDA op tests and benchmarks, DDP): a JSON report and a table,
# under 8 minutes on one H100/H200, the key figures first. All options:  python benchmarks/gpu_check.py --help
#   bash scripts/gpu_check.sh --out gpu_check.json     on the GPU machine
#   bash scripts/gpu_check.sh --dry-run                 without CUDA (CI): toy sizes on the CPU
#   bash scripts/gpu_check.sh --prepare                 wheels for a GPU machine without internet (run where
#                                                       pip works; see benchmarks/offline_wheels.py)
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    shift
    exec "${PYTHON:-python3}" benchmarks/offline_wheels.py "$@"
fi
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDA_HOME=/usr/local/cuda
fi
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
