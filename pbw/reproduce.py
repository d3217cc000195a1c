"""The paper's experiments in miniature, offline: ``python -m pbw.reproduce mini [--quick] [--out DIR]``.

With the bundled mini StyleGAN2, mini BigGAN and tiny CLIP (`pbw.assets`) on the synthetic birds,
whose pixels carry a ground truth (`pbw.data.synthetic`'s oracle), it runs

- masked part-color edits ("a bird with a <color> body") over seeds x colors, with the paper's
  method (CMA-ES then Adam, latent masked) and two ablations: masking only CLIP's image
  (`mask_mode=image`) and Adam alone, on the StyleGAN2; the paper's method on the BigGAN;
- text-to-image from held-out captions (no mask);

and reports per variant: CLIP semantic score, realism (discriminator score; FID/KID against real
synthetic birds with `RandomConvFeatures`, which needs no download), preservation (mean absolute
pixel change outside vs inside the mask) and two ORACLE accuracies read from pixels: the color the
edit painted into the mask (`painted_color`: the palette color whose share of the masked pixels grew
most, now covering at least `PAINTED_MIN_SHARE` of them) is the asked one, and, stricter, the whole masked
region's median color (`region_color`, background included) is the asked one. Writes
``results.md``, ``results.json`` and image grids (original | edited rows) to ``--out``.

The mask is a fixed central box (`MASK_BOX`): generated images have no part labels, and in the
synthetic data the body's position varies so much (no 32 px pixel is body in more than ~30% of the
images) that no fixed part-shaped mask fits; a box over the middle of the frame, where the bird's
pixels are most frequent, is what a user paints, and the oracle reads the color of that region.

``python -m pbw.reproduce bundle LIGHTNING_CKPT CLIP_DIR`` re-bundles trained models into pbw/assets/mini.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image
from tqdm import tqdm

from pbw.assets import bundle_mini, mini_clip_spec, mini_generator_path
from pbw.checkpoints import load_generator
from pbw.data.synthetic import (PAINTED_MIN_SHARE, canonical_caption, color_shares, generate, load_split,
                                painted_color, region_color)
from pbw.editing import EditModule, EditRequest, EditSettings, run_edit
from pbw.editing.masks import load_mask
from pbw.metrics import GenerationMetrics, RandomConvFeatures
from pbw.semantic import PromptSet, SemanticNet

MASK_BOX = "0.25,0.25,0.75,0.75"
PART = "body"
COLORS = ("red", "blue", "green", "yellow", "purple", "white", "orange", "black")
VARIANTS = {  # name -> EditSettings overrides; the first is the paper's method
    "paper: cma+adam, latent mask": {},
    "ablation: mask only CLIP's image": {"mask_mode": "image"},
    "ablation: adam only": {"optimizer": "adam"},
}
BIGGAN_ROW = "BigGAN: cma+adam, latent mask"
PRESENT_FRACTION = 0.05  # a color "is in" an image region when this share of its pixels snap to it


@dataclass
class Scale:
    """How much to run: seeds x colors masked edits per variant (sample seeds `first_seed`...), `captions`
    text-to-image runs; `lr` is Adam's learning rate for every edit."""
    seeds: int
    colors: int
    captions: int
    real: int
    steps: int
    generations: int
    population: int
    crops: int
    batch_size: int
    lr: float = 0.05
    first_seed: int = 1000


SCALES = {
    "quick": Scale(seeds=2, colors=2, captions=2, real=64, steps=4, generations=2, population=4, crops=4,
                   batch_size=4),
    "full": Scale(seeds=4, colors=8, captions=12, real=512, steps=60, generations=10, population=16, crops=8,
                  batch_size=16),
}


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().float().clamp(-1, 1) + 1) / 2).cpu()


def _edit(g, semantic, requests: list[EditRequest], settings: EditSettings, batch_size: int):
    """Run requests in batches; returns originals, edited images, masks [N,1,R,R] and final metrics."""
    x0, x1, masks, metrics = [], [], [], []
    for i in range(0, len(requests), batch_size):
        module = EditModule(g, semantic, requests[i:i + batch_size], settings)
        run_edit(module, "cpu", progress=False)
        with torch.no_grad():
            x1.append(module.render().cpu())
        x0.append(module.x0.cpu())
        masks.append(module.mask.cpu())
        metrics += module.final_metrics()
    return torch.cat(x0), torch.cat(x1), torch.cat(masks), metrics


def _fid_kid(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    m = GenerationMetrics(RandomConvFeatures(), kid_subset_size=100)
    m.update(real, real=True)
    m.update(fake, real=False)
    return m.compute()


def _changes(x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Mean absolute pixel change (0..1 scale, averaged over channels) inside and outside the mask."""
    d = (_to01(x1) - _to01(x0)).abs().mean(1, keepdim=True)
    inside = mask > 0.5
    return float(d[inside].mean()), float(d[~inside].mean()) if (~inside).any() else float("nan")


def colors_present(image: torch.Tensor, mask: torch.Tensor) -> set[str]:
    """Palette colors that at least `PRESENT_FRACTION` of the region's pixels snap to."""
    return {c for c, share in color_shares(image, mask).items() if share >= PRESENT_FRACTION}


def _masked_requests(g, scale: Scale, colors: list[str]) -> tuple[list[EditRequest], list[str]]:
    mask, _ = load_mask(MASK_BOX, g.resolution)
    reqs, asked = [], []
    for seed in range(scale.seeds):
        codes = g.sample(1, seed=scale.first_seed + seed)
        for c in colors:
            prompt = f"a bird with a {c} {PART}"
            reqs.append(EditRequest(codes, PromptSet.parse(prompt), mask, f"seed{seed}_{c}"))
            asked.append(c)
    return reqs, asked


def _masked_edit_row(g, semantic, requests: list[EditRequest], asked: list[str], settings: EditSettings,
                     batch_size: int, real: torch.Tensor) -> tuple[dict, tuple[torch.Tensor, ...]]:
    """Run masked edits; returns their results-table row and (originals, edited, masks)."""
    t0 = time.time()
    x0, x1, masks, metrics = _edit(g, semantic, requests, settings, batch_size)
    inside, outside = _changes(x0, x1, masks)
    painted = [painted_color(x0[i], x1[i], masks[i, 0]) == c for i, c in enumerate(asked)]
    region = [region_color(x1[i], masks[i, 0]) == c for i, c in enumerate(asked)]
    row = {"kind": "masked edit", "n": len(requests),
           "semantic_score": float(np.mean([m["semantic_score"] for m in metrics])),
           "realism": float(np.mean([m["realism"] for m in metrics])),
           **_fid_kid(real, x1), "change_inside": inside, "change_outside": outside,
           "oracle_accuracy": float(np.mean(painted)), "region_accuracy": float(np.mean(region)),
           "seconds": time.time() - t0}
    return row, (x0, x1, masks)


def _text_to_image_row(g, semantic, test_colors: list[dict[str, str]], settings: EditSettings, batch_size: int,
                       real: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Generate from the held-out birds' captions; returns the row, the start images and the results."""
    t0 = time.time()
    captions = [canonical_caption(c) for c in test_colors]
    requests = [EditRequest(g.sample(1, seed=2000 + i), PromptSet.parse(cap), None, f"caption{i}")
                for i, cap in enumerate(captions)]
    x0, x1, _, metrics = _edit(g, semantic, requests, replace(settings, mask_mode="latent"), batch_size)
    box = load_mask(MASK_BOX, g.resolution)[0][0]

    def caption_match(images: torch.Tensor) -> tuple[float, float]:
        body = [region_color(images[i], box[0]) == c[PART] for i, c in enumerate(test_colors)]
        parts = [len(colors_present(images[i], box) & set(c.values())) / len(set(c.values()))
                 for i, c in enumerate(test_colors)]
        return float(np.mean(body)), float(np.mean(parts))

    (body_acc, parts_recall), (body_acc0, parts_recall0) = caption_match(x1), caption_match(x0)
    row = {"kind": "text to image", "n": len(captions), "captions": captions,
           "semantic_score": float(np.mean([m["semantic_score"] for m in metrics])),
           "realism": float(np.mean([m["realism"] for m in metrics])), **_fid_kid(real, x1),
           "oracle_accuracy": body_acc, "caption_color_recall": parts_recall,
           "before": {"oracle_accuracy": body_acc0, "caption_color_recall": parts_recall0},
           "seconds": time.time() - t0}
    return row, x0, x1


def _grid(path: Path, x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    rows = [_to01(x0)]
    if mask is not None:
        rows.append(_to01(x0) * (0.35 + 0.65 * mask))  # the mask, shown by dimming outside it
    rows.append(_to01(x1))
    save_image(torch.cat(rows), path, nrow=len(x0), padding=1)


def run_mini(out: str | Path, quick: bool = False, data: str | Path | None = None,
             generator: str | Path | None = None, clip: str | None = None, scale: Scale | None = None,
             biggan: str | Path | None = None) -> dict:
    """Run the miniature experiments; writes results.md/json and grids to `out`; returns the results.
    `generator`/`biggan`/`clip` default to the bundled mini models (the BigGAN row is left out when
    no BigGAN is given or bundled)."""
    torch.set_grad_enabled(True)
    scale = scale or SCALES["quick" if quick else "full"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if data is None or not Path(data).exists():
        data = Path(data or out / "real_birds")
        generate(data, n=max(2 * scale.real, 64), resolution=32, seed=0)
    real, _, _ = load_split(data, "train", limit=scale.real)
    test_real, test_colors, _ = load_split(data, "test", limit=scale.captions)
    if len(test_colors) < scale.captions:
        raise ValueError(f"{data} has only {len(test_colors)} test images; {scale.captions} captions are needed")
    g = load_generator(generator or mini_generator_path())
    if real.shape[-1] != g.resolution:
        real = torch.nn.functional.interpolate(real, size=g.resolution, mode="area")
    semantic = SemanticNet.from_spec(clip or mini_clip_spec(), crops=scale.crops)
    base = EditSettings(optimizer="cma+adam", steps=scale.steps, lr=scale.lr, population=scale.population,
                        generations=scale.generations, sigma0=0.5, lam=5.0, mask_mode="latent", seed=0)
    colors = list(COLORS[:scale.colors])
    requests, asked = _masked_requests(g, scale, colors)

    results: dict = {"scale": asdict(scale), "mask_box": MASK_BOX, "part": PART, "colors": colors,
                     "settings": asdict(base), "variants": {}}
    for name, overrides in tqdm(VARIANTS.items(), desc="variants"):
        row, (x0_all, x1, masks) = _masked_edit_row(g, semantic, requests, asked, replace(base, **overrides),
                                                    scale.batch_size, real)
        results["variants"][name] = row
        _grid(out / f"grid_{_slug(name)}.png", x0_all, x1, masks)
    # the unedited starting images: the region oracle's chance level (already the asked color), D/FID reference
    with torch.no_grad():
        d0 = g.discriminator(x0_all).flatten() if g.discriminator is not None else torch.full((len(x0_all),), float("nan"))
    results["variants"]["reference: unedited originals"] = {
        "kind": "no edit", "n": len(requests), "semantic_score": float("nan"), "realism": float(d0.mean()),
        **_fid_kid(real, x0_all), "change_inside": 0.0, "change_outside": 0.0,
        "oracle_accuracy": float("nan"),  # nothing was painted
        "region_accuracy": float(np.mean([region_color(x0_all[i], masks[i, 0]) == c for i, c in enumerate(asked)])),
        "seconds": 0.0}
    if biggan is None:
        with contextlib.suppress(FileNotFoundError):  # no bundled BigGAN: leave its rows out
            biggan = mini_generator_path("biggan")
    gb = None
    if biggan is not None:  # the paper's method on the class-conditional generator (random species)
        gb = load_generator(biggan)
        b_requests, b_asked = _masked_requests(gb, scale, colors)
        row, images = _masked_edit_row(gb, semantic, b_requests, b_asked, base, scale.batch_size, real)
        results["variants"][BIGGAN_ROW] = row
        _grid(out / "grid_biggan.png", *images)

    # text-to-image from held-out captions (whole image, no mask)
    for key, gen in (("text_to_image", g), ("text_to_image_biggan", gb)):
        if gen is not None:
            results[key], x0, x1 = _text_to_image_row(gen, semantic, test_colors, base, scale.batch_size, real)
            _grid(out / f"grid_{key}.png", x0, x1)
    save_image(_to01(test_real), out / "grid_heldout_real.png", nrow=len(test_real), padding=1)
    results["seconds_total"] = time.time() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))
    return results


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(":")[-1].strip())


TABLE_COLUMNS = ("n", "oracle_accuracy", "region_accuracy", "change_inside", "change_outside", "semantic_score", "realism", "fid", "kid",
                 "seconds")


def results_markdown(results: dict) -> str:
    """The results table (markdown)."""
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [f"# pbw miniature reproduction ({results['scale']})", "",
             f"Masked edits: \"a bird with a <color> {results['part']}\" for colors {results['colors']}, "
             f"mask = box {results['mask_box']}. Oracle accuracy = the color the edit painted into the mask "
             f"(the palette color whose share of the masked pixels grew most, now at least {PAINTED_MIN_SHARE:.0%} "
             "of them) "
             "is the asked color; region accuracy (stricter: the background in the box counts) = the masked "
             "region's median pixel color, snapped to the palette, is the asked color; change = mean |pixel change| (0..1) "
             "inside / outside the mask; realism = discriminator score (higher = more real); FID/KID vs "
             "real synthetic birds with RandomConvFeatures.", "",
             "| variant | " + " | ".join(TABLE_COLUMNS) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, row in results["variants"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(row.get(c, "")) for c in TABLE_COLUMNS) + " |")
    t2i = {label: results[key] for key, label in (("text_to_image", "StyleGAN2"), ("text_to_image_biggan", "BigGAN"))
           if key in results}
    for label, t in t2i.items():
        lines.append(f"| {label}: text to image (held-out captions) | "
                     + " | ".join(fmt(t.get(c, "")) for c in TABLE_COLUMNS) + " |")
    lines += ["", f"Text to image (StyleGAN2: w optimized; BigGAN: z and the class vector): oracle = body color in "
              f"the central box matches the caption's; caption color recall = share of the caption's colors "
              f"present (>= {PRESENT_FRACTION:.0%} of the box's pixels)."]
    for label, t in t2i.items():
        lines.append(f"- {label}: oracle {t['oracle_accuracy']:.3f} (before optimization "
                     f"{t['before']['oracle_accuracy']:.3f}); caption color recall {t['caption_color_recall']:.3f} "
                     f"(before {t['before']['caption_color_recall']:.3f}).")
    lines += ["", f"Total time: {results['seconds_total']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pbw.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    mini = sub.add_parser("mini", help="run the miniature experiments")
    mini.add_argument("--quick", action="store_true", help="a handful of short edits (CI)")
    mini.add_argument("--out", default="out/reproduce_mini")
    mini.add_argument("--data", default=None, help="synthetic birds root (made in OUT/real_birds when absent)")
    mini.add_argument("--generator", default=None, help="StyleGAN2 checkpoint (default: the bundled one)")
    mini.add_argument("--biggan", default=None, help="BigGAN checkpoint (default: the bundled one, if any)")
    mini.add_argument("--clip", default=None, help="CLIP spec (default: the bundled local-dir one)")
    for field in ("seeds", "colors", "captions", "steps", "generations", "population"):
        mini.add_argument(f"--{field}", type=int, default=None, help=f"override the scale's {field}")
    mini.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default 0.05)")
    mini.add_argument("--first-seed", type=int, default=None,
                      help="the masked edits' first sample seed (default 1000; others give held-out seeds)")
    bundle = sub.add_parser("bundle", help="write pbw/assets/mini from a trained StyleGAN2, CLIP folder "
                                           "(and BigGAN)")
    bundle.add_argument("generator_ckpt")
    bundle.add_argument("clip_dir")
    bundle.add_argument("--biggan", default=None, help="a trained mini BigGAN checkpoint to bundle too")
    args = p.parse_args(argv)
    if args.command == "bundle":
        for name, size in bundle_mini(args.generator_ckpt, args.clip_dir, biggan_ckpt=args.biggan).items():
            print(f"{name}: {size / 2**20:.2f} MiB")
        return
    scale = SCALES["quick" if args.quick else "full"]
    scale = replace(scale, **{k: v for k, v in vars(args).items() if k in asdict(scale) and v is not None})
    results = run_mini(args.out, args.quick, args.data, args.generator, args.clip, scale, args.biggan)
    print(results_markdown(results))


if __name__ == "__main__":
    main()
