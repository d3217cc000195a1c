#!/usr/bin/env bash
# Retrain the bundled miniature models from scratch on the CPU and re-bundle them into pbw/assets/mini.
#   scripts/retrain_mini.sh [WORKDIR]        (default WORKDIR: runs/mini; PYTHON=... picks the interpreter)
# Measured on a 2-core CPU shared with other jobs: data ~1 min; tiny CLIP (1500 steps, 64 px) ~16 min;
# mini StyleGAN2 (32 px) is capped at 45 min by configs/mini/stylegan2.yaml (trainer.max_time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-runs/mini}
mkdir -p "$WORK"
stamp() { date -u +%H:%M:%S; }

echo "[$(stamp)] synthetic birds: 2000 at 64 px (CLIP), 4000 at 32 px (StyleGAN2)"
"$PY" -m pbw.data.synthetic --out "$WORK/birds64" --n 2000 --resolution 64 --seed 0
"$PY" -m pbw.data.synthetic --out "$WORK/birds32" --n 4000 --resolution 32 --seed 0

echo "[$(stamp)] tiny CLIP"
"$PY" train.py fit --config configs/mini/clip.yaml --data.root "$WORK/birds64" \
    --model.init_args.export_dir "$WORK/clip" --trainer.default_root_dir "$WORK/clip_run"

echo "[$(stamp)] mini StyleGAN2"
"$PY" train.py fit --config configs/mini/stylegan2.yaml --data.root "$WORK/birds32" \
    --trainer.default_root_dir "$WORK/stylegan2" --trainer.logger.init_args.save_dir "$WORK/stylegan2"
CKPT=$(ls -td "$WORK"/stylegan2/lightning_logs/version_*/checkpoints/last.ckpt | head -n 1)

echo "[$(stamp)] bundle $CKPT + $WORK/clip -> pbw/assets/mini"
"$PY" -m pbw.reproduce bundle "$CKPT" "$WORK/clip"
echo "[$(stamp)] done; check it with: $PY -m pbw.reproduce mini --quick"
