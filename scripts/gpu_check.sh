#!/usr/bin/env bash
# One prepared GPU check of pbw (CUDA ops tests, op/step/edit benchmarks, s/kimg, DDP smoke): a JSON
# report and a table, under 8 minutes on one H100/H200. All options and the device command:
#   python benchmarks/gpu_check.py --help
# Here, once (downloads the wheels to carry into .whl/):   bash scripts/gpu_check.sh --prepare
# On the device:                                          bash scripts/gpu_check.sh --out $OUT/gpu_check.json
# Without CUDA (CI, toy sizes on the CPU):                  bash scripts/gpu_check.sh --dry-run
set -u
cd "$(dirname "$0")/.."
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDA_HOME=/usr/local/cuda
fi
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
