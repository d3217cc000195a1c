#!/usr/bin/env bash
# Train the miniature's 64 px generators (configs/mini/stylegan2_64.yaml and biggan_64.yaml) side by side on
# one GPU for SECONDS, each with WORKERS processes drawing fresh birds.
#   scripts/train_mini_gpu.sh SECONDS [WORKDIR] [WORKERS]     (default WORKDIR runs/mini, WORKERS 6)
# Each training writes WORKDIR/<family>_64/ (checkpoints/, CSV logs, sample grids) and WORKDIR/<family>_64.log.
# Continue either anywhere, the CPU too, with the config's own command and --ckpt_path last:
#   python train.py fit --config configs/mini/stylegan2_64.yaml --trainer.default_root_dir runs/mini/stylegan2_64 \
#       --trainer.logger.init_args.save_dir runs/mini/stylegan2_64 --ckpt_path last
# The reference ops are used (PBW_CUDA_OPS=ref): nothing is compiled, and at 64 px they cost little.
# Measured on one H200 (2026-12-04, 290 s, 4 workers each, beside the GPU check's build and kernel tests):
# StyleGAN2 1655 iterations (5.7 it/s), BigGAN 2000 (6.9 it/s): the tiny models are launch-bound there.
set -u
cd "$(dirname "$0")/.."
SECONDS_=${1:?usage: scripts/train_mini_gpu.sh SECONDS [WORKDIR] [WORKERS]}
WORK=${2:-runs/mini}
WORKERS=${3:-6}
PY=${PYTHON:-python3}
mkdir -p "$WORK"
max_time=$(printf '00:%02d:%02d:%02d' $((SECONDS_ / 3600)) $((SECONDS_ % 3600 / 60)) $((SECONDS_ % 60)))
for family in stylegan2 biggan; do
    run="$WORK/${family}_64"
    PBW_CUDA_OPS=ref OMP_NUM_THREADS=2 "$PY" train.py fit --config "configs/mini/${family}_64.yaml" \
        --trainer.accelerator "${ACCELERATOR:-gpu}" --trainer.max_time "$max_time" \
        --data.init_args.num_workers "$WORKERS" \
        --trainer.default_root_dir "$run" --trainer.logger.init_args.save_dir "$run" --ckpt_path last \
        "${@:4}" >"$run.log" 2>&1 &
done
status=0
for job in $(jobs -p); do wait "$job" || status=1; done
for family in stylegan2 biggan; do  # the last validation (FID/KID on the yardstick's features)
    echo "== $family"; tail -n 3 "$WORK/${family}_64"/lightning_logs/version_*/metrics.csv
done
exit $status
