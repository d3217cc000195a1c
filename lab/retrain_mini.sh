#!/usr/bin/env bash
# Retrain the bundled miniature models from scratch on the CPU and re-bundle them into pbw/assets/mini.
#   lab/retrain_mini.sh [WORKDIR]        (default WORKDIR: runs/mini; PYTHON=... picks the interpreter)
# Every model trains on fresh synthetic birds drawn as it goes (pbw.data.fresh_birds): no data to prepare.
# The trainings run one after the other: two trainings sharing 2 cores run ~10x slower. Each stops at its
# config's max_steps or max_time (2 h 25 min per run); times measured on 2 idle CPU cores:
#   tiny CLIP (mini/clip.yaml, 4000 steps)              ~23 min
#   StyleGAN2 64 px (mini/stylegan2_64.yaml, 12000 it)  ~0.35 s an iteration, ~70 min; the bundled one
#       had 46200 iterations over several resumed runs (its history: lab/README.md)
#   BigGAN 64 px (mini/biggan_64.yaml, 8000 it)         ~0.38 s an iteration, 51 min
# With a GPU, lab/train_mini_gpu.sh trains both generators side by side into the same folders.
# Interrupted, or stopped by max_time? Run it again: each training continues from
# its newest checkpoint (--ckpt_path last) and a finished one is not retrained; delete WORKDIR to start over.
# The yardstick and the part segmenter (pbw/assets/mini/*.safetensors) are the mini world's judges, trained
# apart: python -m pbw.evaluation.yardstick train --help, python -m pbw.evaluation.segmenter train --help.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-runs/mini}
mkdir -p "$WORK"
stamp() { date -u +%H:%M:%S; }

echo "[$(stamp)] tiny CLIP"
"$PY" train.py fit --config mini/clip.yaml --model.init_args.export_dir "$WORK/clip" \
    --trainer.default_root_dir "$WORK/clip_run" --trainer.logger.init_args.save_dir "$WORK/clip_run" \
    --ckpt_path last

for family in stylegan2 biggan; do
    echo "[$(stamp)] mini $family, 64 px"
    "$PY" train.py fit --config "mini/${family}_64.yaml" --trainer.default_root_dir "$WORK/${family}_64" \
        --trainer.logger.init_args.save_dir "$WORK/${family}_64" --ckpt_path last
done

echo "[$(stamp)] bundle -> pbw/assets/mini"
"$PY" -m pbw.reproduce bundle "$WORK/stylegan2_64/checkpoints/last.ckpt" "$WORK/clip" \
    --biggan "$WORK/biggan_64/checkpoints/last.ckpt"
echo "[$(stamp)] done; check it with: $PY -m pbw.evaluation.birds and $PY -m pbw.reproduce mini --quick"
