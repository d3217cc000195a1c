"""The mini world's judges on a generator: does it draw birds, the species asked, like the real ones?

`generator_report(g)` gives, for `n` samples from sample seed `seed`:
- ``bird_rate``: the share in which the part segmenter finds a whole bird (`pbw.evaluation.segmenter`);
- ``species_accuracy`` (class-conditional generators): the share the yardstick recognises as the
  species they were conditioned on (`pbw.evaluation.yardstick`; classes 0..11 in turn);
- ``species_spread``: how many species the samples amount to, as the yardstick sees them (the
  exponential of the entropy of its species predictions; 12 when all are equally common), and
  ``real_species_spread`` the same for the real birds: a generator that keeps to a few species at a
  time (mode collapse) scores well below the real birds;
- ``fid`` / ``kid`` on the yardstick's features against `n` real birds drawn at the generator's
  resolution (world `real_seed`).

    python -m pbw.evaluation.birds                  # the bundled mini StyleGAN2 and BigGAN, n = 256
    python -m pbw.evaluation.birds --stylegan2 runs/.../last.ckpt --biggan none --n 512
"""

from __future__ import annotations

import argparse
import json

import torch

from pbw.data.synthetic import draw_birds
from pbw.evaluation.segmenter import bird_rate, load_segmenter
from pbw.evaluation.yardstick import YardstickFeatures, load_yardstick, predict
from pbw.metrics import GenerationMetrics

REAL_SEED = 300  # the world the real reference birds come from


@torch.no_grad()
def samples(generator, n: int, seed: int = 0, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`n` images in [-1, 1] from sample seed `seed` and, for a class-conditional generator, their
    classes (0..n_classes-1 in turn)."""
    kwargs = {}
    classes = None
    if getattr(generator, "is_conditional", False):
        classes = torch.arange(n) % generator.n_classes
        kwargs["classes"] = classes
    codes = generator.sample(n, seed=seed, **kwargs)
    images = []
    for i in range(0, n, batch_size):
        c = {k: v[i : i + batch_size] for k, v in codes.items()}
        images.append(generator.decode(generator.encode(c), cond=c).float().cpu())
    return torch.cat(images), classes


def effective_number(labels: torch.Tensor, n_classes: int) -> float:
    """exp(entropy) of the labels' histogram: how many equally common classes they amount to."""
    p = torch.bincount(labels, minlength=n_classes).float() / len(labels)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def generator_report(generator, n: int = 256, seed: int = 0, real_seed: int = REAL_SEED) -> dict:
    """Bird rate, species accuracy (conditional generators), species spread and yardstick FID/KID of
    `n` samples."""
    from pbw.evaluation.birdnets import accuracy_entry

    images, classes = samples(generator.eval(), n, seed)
    real = draw_birds(n, images.shape[-1], seed=real_seed).tensors()
    yardstick = load_yardstick()
    pred = predict(yardstick, images)["species"]
    n_species = yardstick.species.out_features
    out = {
        "n": n,
        "sample_seed": seed,
        "resolution": int(images.shape[-1]),
        "bird_rate": bird_rate(images, load_segmenter()),
        "species_spread": effective_number(pred, n_species),
        "real_species_spread": effective_number(predict(yardstick, real)["species"], n_species),
    }
    if classes is not None:
        out["species_accuracy"] = accuracy_entry((pred == classes).numpy())
    metrics = GenerationMetrics(YardstickFeatures(), kid_subset_size=min(100, n))
    metrics.update(real, real=True)
    metrics.update(images, real=False)
    out.update(metrics.compute())
    return out


def markdown(reports: dict[str, dict]) -> str:
    """A table row per generator: bird rate and species accuracy with 95% intervals, FID, KID."""

    def acc(entry):
        if entry is None:
            return "-"
        return f"{entry['value']:.3f} [{entry['ci95'][0]:.2f}, {entry['ci95'][1]:.2f}]"

    lines = [
        "| generator | n | bird rate | species accuracy | species spread (real) | FID (yardstick) | KID (yardstick) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        lines.append(
            f"| {name} | {r['n']} | {acc(r['bird_rate'])} | {acc(r.get('species_accuracy'))} | "
            f"{r['species_spread']:.1f} ({r['real_species_spread']:.1f}) | {r['fid']:.3f} | {r['kid']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from pbw.assets import mini_generator_path
    from pbw.checkpoints import load_generator

    p = argparse.ArgumentParser(
        prog="python -m pbw.evaluation.birds", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--stylegan2", default=None, help="checkpoint (default: the bundled one; 'none' to skip)")
    p.add_argument("--biggan", default=None, help="checkpoint (default: the bundled one; 'none' to skip)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="the first sample seed")
    p.add_argument("--json", default=None, help="also write the reports to this file")
    args = p.parse_args(argv)
    reports = {}
    for family, path in (("stylegan2", args.stylegan2), ("biggan", args.biggan)):
        if path == "none":
            continue
        path = path or mini_generator_path(family)
        reports[f"{family}: {path}"] = generator_report(load_generator(path), args.n, args.seed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
    print(markdown(reports))


if __name__ == "__main__":
    main()
