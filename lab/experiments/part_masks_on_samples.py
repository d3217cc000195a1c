"""The mask segmenter's body on 32 samples of the bundled mini StyleGAN2 (seeds 5000-5031), as a person
checks it: each sample | the body the segmenter labels (cyan) | the body `part_mask` selects (what "Select
part: body" and ``--mask part:body`` use). Writes docs/app_part_selection.png and prints, per sample,
whether the wing the segmenter marks has the body's own color.

    python -m lab.experiments.part_masks_on_samples --out docs/app_part_selection.png"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from pbw import assets
from pbw.checkpoints import load_generator
from pbw.data.synthetic import PART_LABELS
from pbw.evaluation.segmenter import load_segmenter, part_mask, segment, wing_is_body_colored

TINT = np.array([0, 255, 255])


def overlay(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[mask] = (0.35 * x[mask] + 0.65 * TINT).astype(np.uint8)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--first-seed", type=int, default=5000)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--out", default="docs/app_part_selection.png")
    args = p.parse_args()
    g = load_generator(assets.mini_generator_path()).eval()
    net = load_segmenter(kind="masks")
    tiles, same = [], 0
    for seed in range(args.first_seed, args.first_seed + args.n):
        with torch.no_grad():
            codes = g.sample(1, seed=seed)
            image = g.decode(g.encode(codes), cond=codes)[0]
        labels = segment(image[None], net)[0]
        x = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        before = (labels == PART_LABELS["body"]).numpy()
        after = part_mask(image, "body").bool().numpy()
        merged = wing_is_body_colored(labels, image)
        same += merged
        print(
            f"seed {seed}: wing of the body's color {merged}; body {before.mean():.0%} -> {after.mean():.0%} of the image"
        )
        gap = np.full((x.shape[0], 2, 3), 255, np.uint8)
        tiles.append(np.concatenate([x, overlay(x, before), overlay(x, after), gap], 1))
    rows = [np.concatenate(tiles[r : r + 4], 1) for r in range(0, len(tiles), 4)]
    grid = np.concatenate([np.concatenate([r, np.full((2, r.shape[1], 3), 255, np.uint8)]) for r in rows])
    Image.fromarray(grid).save(args.out)
    print(f"the wing marked in the middle has the body's own color in {same} of {args.n} samples; wrote {args.out}")


if __name__ == "__main__":
    main()
