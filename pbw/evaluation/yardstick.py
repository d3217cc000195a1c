"""The mini world's yardstick: a small CNN trained on real synthetic birds to tell their species (12)
and each part's color (11 palette colors x 5 parts).

- As a *classifier* it checks a class-conditional generator: does a BigGAN sample conditioned on a
  species look like that species (`species_accuracy_of`)?
- Its penultimate features (64-d) are the *feature extractor for FID/KID* in the miniature
  (`YardstickFeatures`, an `nn.Module` for `pbw.metrics.GenerationMetrics` and the mini trainers'
  ``feature_extractor``): unlike `pbw.metrics.RandomConvFeatures`, they were trained to tell a bird's
  species and part colors, so they move when samples stop looking like birds.

It sees every image at 64 px (a 32 px image is upsampled: see `pbw.evaluation.birdnets`). The bundled
weights (`pbw.assets.mini_yardstick_path`) were trained with
``python -m pbw.evaluation.yardstick train --out pbw/assets/mini/yardstick.safetensors``
(a few minutes on one core); the file's metadata holds its held-out accuracies
(``python -m pbw.evaluation.yardstick evaluate`` measures them again).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pbw.data.synthetic import CLASS_NAMES, COLOR_NAMES, PARTS, DrawnBirds, draw_birds
from pbw.evaluation.birdnets import (
    WORK_RESOLUTION,
    BirdBatches,
    accuracy_entry,
    batched,
    conv_block,
    load_net,
    save_net,
    to_work,
    train_loop,
)

TRAIN_SEED, HELDOUT_SEED = 100, 101  # the worlds the bundled yardstick trained and was measured on


class YardstickNet(nn.Module):
    """Images [B,3,H,W] in [-1,1] -> {"features": [B,features], "species": [B,12] logits,
    "colors": [B,5,11] logits (parts in `PARTS` order, colors in `COLOR_NAMES` order)}.

    A conv trunk to 8 x 8; each part has a learned spatial attention map that pools the trunk's
    features where that part is (birds move around the frame), and reads its color from them. The
    features are one layer over the whole-image average and the five part poolings: what the bird
    looks like and where its parts are."""

    def __init__(
        self,
        width: int = 32,
        features: int = 64,
        n_species: int = len(CLASS_NAMES),
        n_parts: int = len(PARTS),
        n_colors: int = len(COLOR_NAMES),
    ):
        super().__init__()
        c = width
        self.n_parts, self.n_colors = n_parts, n_colors
        self.trunk = nn.Sequential(
            conv_block(3, c, stride=2, kernel=4),
            conv_block(c, c),  # 32 x 32
            conv_block(c, 2 * c, stride=2),
            conv_block(2 * c, 2 * c),  # 16 x 16
            conv_block(2 * c, 4 * c, stride=2),
            conv_block(4 * c, 4 * c),  # 8 x 8
        )
        self.attention = nn.Conv2d(4 * c, n_parts, 1)
        self.color_weight = nn.Parameter(torch.randn(n_parts, 4 * c, n_colors) / (4 * c) ** 0.5)
        self.color_bias = nn.Parameter(torch.zeros(n_parts, n_colors))
        self.fc = nn.Linear((1 + n_parts) * 4 * c, features)
        self.species = nn.Linear(features, n_species)

    def _trunk(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(to_work(images, WORK_RESOLUTION))
        attention = self.attention(h).flatten(2).softmax(-1)  # [B, parts, HW]
        parts = torch.einsum("bpn,bcn->bpc", attention, h.flatten(2))  # [B, parts, C]
        features = F.silu(self.fc(torch.cat([h.mean(dim=(2, 3)), parts.flatten(1)], 1)))
        return features, parts

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate features of images in [-1, 1] (any size)."""
        return self._trunk(images)[0]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f, parts = self._trunk(images)
        colors = torch.einsum("bpc,pck->bpk", parts, self.color_weight) + self.color_bias
        return {"features": f, "species": self.species(f), "colors": colors}


def load_yardstick(path: str | Path | None = None) -> YardstickNet:
    """The yardstick at `path` (default: the bundled one), in eval mode; its `info` attribute holds
    what its trainer measured."""
    if path is None:
        from pbw.assets import mini_yardstick_path

        path = mini_yardstick_path()
    net, info = load_net(YardstickNet, path)
    net.info = info
    return net


class YardstickFeatures(nn.Module):
    """The yardstick's 64-d penultimate features as a FID/KID feature extractor: images [B,3,H,W] in
    [0, 1] (float) or 0..255 (uint8) -> [B, 64], standardized by real birds' feature mean and standard
    deviation (stored with the weights), so that every dimension counts alike in FID and KID's
    polynomial kernel sees values of order 1. `weights`: a yardstick file (default: the bundled one).

    In a trainer config: ``feature_extractor: {class_path: pbw.evaluation.yardstick.YardstickFeatures}``.
    """

    def __init__(self, weights: str | None = None):
        super().__init__()
        self.net = load_yardstick(weights)
        self.num_features = self.net.fc.out_features
        stats = self.net.info.get("feature_statistics", {})
        self.register_buffer("mean", torch.tensor(stats.get("mean", [0.0] * self.num_features)))
        self.register_buffer("std", torch.tensor(stats.get("std", [1.0] * self.num_features)))

    def train(self, mode: bool = True) -> YardstickFeatures:
        return super().train(False)  # a fixed judge: never in training mode, whatever its owner does

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return (self.net.embed(x * 2 - 1) - self.mean) / self.std


def feature_statistics(net: YardstickNet, n: int = 2000, seed: int = HELDOUT_SEED + 1) -> dict[str, list[float]]:
    """Per-dimension mean and standard deviation of the features of `n` real birds (half drawn at 64 px,
    half at 32 px) of world `seed`: what `YardstickFeatures` standardizes by."""
    images = [draw_birds(n // 2, r, seed=seed).tensors() for r in (64, 32)]
    f = torch.cat([batched(net.embed, x) for x in images])
    return {
        "mean": [round(v, 5) for v in f.mean(0).tolist()],
        "std": [round(v, 5) for v in f.std(0).clamp_min(1e-3).tolist()],
        "n": n,
        "seed": seed,
    }


# ------------------------------------------------------------------------------------------- judging


@torch.no_grad()
def predict(net: YardstickNet, images: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Predicted species [N] and part colors [N,5] (indices) of images in [-1, 1]."""
    species, colors = [], []
    for i in range(0, len(images), batch_size):
        out = net(images[i : i + batch_size])
        species.append(out["species"].argmax(1))
        colors.append(out["colors"].argmax(2))
    return {"species": torch.cat(species), "colors": torch.cat(colors)}


def evaluate_on(net: YardstickNet, birds: DrawnBirds) -> dict:
    """Species and per-part color accuracy (95% Wilson intervals) on drawn birds."""
    pred = predict(net, birds.tensors())
    colors_ok = pred["colors"].numpy() == birds.part_colors
    return {
        "species_accuracy": accuracy_entry(pred["species"].numpy() == birds.species),
        "part_color_accuracy": {p: accuracy_entry(colors_ok[:, j]) for j, p in enumerate(PARTS)},
        "all_part_colors_accuracy": accuracy_entry(colors_ok.ravel()),
    }


def evaluate(net: YardstickNet, n: int = 1200, seed: int = HELDOUT_SEED) -> dict:
    """Accuracies on `n` held-out birds of world `seed`, drawn at 64 px and at 32 px."""
    return {f"{r}px": evaluate_on(net, draw_birds(n, r, seed=seed)) for r in (64, 32)}


@torch.no_grad()
def species_accuracy_of(
    generator, n: int = 256, seed: int = 0, net: YardstickNet | None = None, batch_size: int = 64
) -> dict:
    """How often the yardstick recognises a class-conditional generator's samples as the species they
    were conditioned on: `n` samples, classes 0..11 in turn, codes from sample seed `seed` (a
    `MaskableGenerator` with `is_conditional`, e.g. the mini BigGAN)."""
    net = net or load_yardstick()
    classes = torch.arange(n) % len(CLASS_NAMES)
    codes = generator.sample(n, seed=seed, classes=classes)
    images = torch.cat([generator.decode(generator.encode(c), cond=c).cpu() for c in _chunks(codes, batch_size)])
    pred = predict(net, images)["species"]
    per_class = {CLASS_NAMES[k]: float((pred[classes == k] == k).float().mean()) for k in range(len(CLASS_NAMES))}
    return {**accuracy_entry((pred == classes).numpy()), "per_class": per_class}


def _chunks(codes: dict[str, torch.Tensor], size: int):
    n = len(next(iter(codes.values())))
    for i in range(0, n, size):
        yield {k: v[i : i + size] for k, v in codes.items()}


# ------------------------------------------------------------------------------------------ training


def _loss(net: YardstickNet, batch) -> tuple[torch.Tensor, dict]:
    x, _, species, colors = batch
    out = net(x)
    l_species = F.cross_entropy(out["species"], species)
    l_colors = F.cross_entropy(out["colors"].flatten(0, 1), colors.flatten())
    return l_species + l_colors, {"species": l_species.detach(), "colors": l_colors.detach()}


def train_yardstick(
    out: str | Path,
    n: int = 6000,
    steps: int = 1000,
    batch_size: int = 48,
    lr: float = 3e-3,
    width: int = 32,
    features: int = 64,
    seed: int = TRAIN_SEED,
    heldout: int = 1200,
    heldout_seed: int = HELDOUT_SEED,
    stats_n: int = 2000,
    log=print,
) -> dict:
    """Draw `n` birds of world `seed` (64 px), train the yardstick `steps` steps, measure it on
    `heldout` birds of world `heldout_seed` (at 64 and 32 px) and its feature statistics on `stats_n`
    more (`feature_statistics`), write it to `out`; returns the info stored with the weights."""
    torch.manual_seed(seed)
    import time

    t0 = time.perf_counter()
    birds = draw_birds(n, WORK_RESOLUTION, seed=seed, progress=True)
    draw_s = time.perf_counter() - t0
    config = {"width": width, "features": features}
    net = YardstickNet(**config)
    train_s = train_loop(net, iter(BirdBatches(birds, batch_size, seed)), _loss, steps, lr, log=log)
    info = {
        "trained_on": {"n": n, "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr},
        "seconds": {"draw": round(draw_s, 1), "train": round(train_s, 1)},
        "heldout_seed": heldout_seed,
        "heldout": evaluate(net, heldout, heldout_seed),
        "feature_statistics": feature_statistics(net, stats_n),
    }
    size = save_net(net, out, config, info)
    log(f"wrote {out} ({size / 1024:.0f} KiB)")
    return info


def summary(info: dict) -> str:
    """The held-out accuracies as text lines."""
    lines = []
    for res, e in info.get("heldout", info).items():
        sp, allc = e["species_accuracy"], e["all_part_colors_accuracy"]
        parts = ", ".join(f"{p} {v['value']:.3f}" for p, v in e["part_color_accuracy"].items())
        lines.append(
            f"{res}: species {sp['value']:.3f} [{sp['ci95'][0]:.3f}, {sp['ci95'][1]:.3f}] (n={sp['n']}); "
            f"part colors {allc['value']:.3f} [{allc['ci95'][0]:.3f}, {allc['ci95'][1]:.3f}] ({parts})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m pbw.evaluation.yardstick",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a yardstick on fresh birds and write its weights")
    t.add_argument("--out", required=True, help="weights file (.safetensors)")
    t.add_argument("--n", type=int, default=6000, help="birds drawn for training")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=48)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--seed", type=int, default=TRAIN_SEED)
    t.add_argument("--heldout", type=int, default=1200)
    e = sub.add_parser("evaluate", help="held-out species and part-color accuracy")
    e.add_argument("--weights", default=None, help="default: the bundled yardstick")
    e.add_argument("--n", type=int, default=1200)
    e.add_argument("--seed", type=int, default=HELDOUT_SEED)
    s = sub.add_parser("score", help="species accuracy of a class-conditional generator's samples")
    s.add_argument("--generator", default=None, help="checkpoint (default: the bundled mini BigGAN)")
    s.add_argument("--weights", default=None)
    s.add_argument("--n", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.command == "train":
        info = train_yardstick(
            args.out, args.n, args.steps, args.batch_size, args.lr, args.width, seed=args.seed, heldout=args.heldout
        )
        print(summary(info))
    elif args.command == "evaluate":
        print(summary(evaluate(load_yardstick(args.weights), args.n, args.seed)))
    else:
        from pbw.assets import mini_generator_path
        from pbw.checkpoints import load_generator

        g = load_generator(args.generator or mini_generator_path("biggan")).eval()
        r = species_accuracy_of(g, args.n, args.seed, load_yardstick(args.weights))
        print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
