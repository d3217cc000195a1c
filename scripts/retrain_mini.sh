#!/usr/bin/env bash
# Retrain the bundled miniature models from scratch on the CPU and re-bundle them into pbw/assets/mini.
#   scripts/retrain_mini.sh [WORKDIR]        (default WORKDIR: runs/mini; PYTHON=... picks the interpreter)
# The trainings run one after the other: two trainings sharing 2 cores, each with 2 threads, run ~10x
# slower. Measured on 2 CPU cores: data ~1.5 min; tiny CLIP (4000 steps) ~30 min on one thread; the
# mini StyleGAN2 (~50 min: 0.4 s per iteration on 2 idle cores) and mini BigGAN (~40 min) stop at the max_steps of their
# configs (configs/mini/), which are the bundled models' lengths.
# Interrupted? Run it again: each training continues from its newest checkpoint (--ckpt_path last) and a
# finished one is not retrained; delete WORKDIR to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-runs/mini}
mkdir -p "$WORK"
stamp() { date -u +%H:%M:%S; }

echo "[$(stamp)] synthetic birds: 4000 at 64 px (CLIP), 4000 at 32 px (generators)"
"$PY" -m pbw.data.synthetic --out "$WORK/birds64" --n 4000 --resolution 64 --seed 0
"$PY" -m pbw.data.synthetic --out "$WORK/birds32" --n 4000 --resolution 32 --seed 0

echo "[$(stamp)] tiny CLIP"
"$PY" train.py fit --config configs/mini/clip.yaml --data.root "$WORK/birds64" --model.init_args.export_dir "$WORK/clip" \
    --trainer.default_root_dir "$WORK/clip_run" --trainer.logger.init_args.save_dir "$WORK/clip_run" \
    --ckpt_path last

for family in stylegan2 biggan; do
    echo "[$(stamp)] mini $family"
    "$PY" train.py fit --config "configs/mini/$family.yaml" --data.root "$WORK/birds32" \
        --trainer.default_root_dir "$WORK/$family" --trainer.logger.init_args.save_dir "$WORK/$family" --ckpt_path last
done

echo "[$(stamp)] bundle -> pbw/assets/mini"
"$PY" -m pbw.reproduce bundle "$WORK/stylegan2/checkpoints/last.ckpt" "$WORK/clip" \
    --biggan "$WORK/biggan/checkpoints/last.ckpt"
echo "[$(stamp)] done; check it with: $PY -m pbw.reproduce mini --quick"
