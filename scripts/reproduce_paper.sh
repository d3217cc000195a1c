#!/usr/bin/env bash
# Every paper experiment (CUB text to image, bedrooms, Places) at reduced size, timed on one GPU:
#   bash scripts/reproduce_paper.sh [WEIGHTS_DIR] [--prompts 2] [--seeds 2] [--out out/reproduce_paper]
#   bash scripts/reproduce_paper.sh --dry-run          # toy sizes on the CPU (CI)
# Arguments after -- go to every `pbw-reproduce run`, e.g. -- --settings.generations 10 --device cuda:1
# WEIGHTS_DIR may hold cub-256.pkl, stylegan2_bedroom.pt, biggan-places256.pth, categories_places365.txt,
# CUB_200_2011/ (with text_c10), clip-vit-b-32-openai.bin, clip-vit-l-14-openai.bin, alexnet-owt-7be5be79.pth;
# whatever is missing is replaced by random weights of the same size (timing only). Prints seconds per edit.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" scripts/reproduce_paper.py "$@"
