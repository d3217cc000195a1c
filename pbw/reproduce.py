"""The paper's experiments in miniature, offline: ``python -m pbw.reproduce mini [--quick] [--out DIR]``.

With the bundled mini StyleGAN2, mini BigGAN and tiny CLIP (`pbw.assets`) on the synthetic birds,
whose pixels carry a ground truth (`pbw.evaluation.oracle`), it runs

- masked part-color edits ("a bird with a <color> body") over seeds x colors, with the paper's
  method (CMA-ES then Adam in one broadcast w, latent masked) and its variants on the StyleGAN2:
  W+ instead of w, the official code's frozen demodulation, masking only CLIP's image
  (`mask_mode=image`) and Adam alone; the paper's method on the BigGAN;
- text-to-image from held-out captions (no mask), StyleGAN2 in z (the paper's), w and W+, BigGAN
  in z + class vector;

and reports per variant (accuracies with 95% Wilson intervals): CLIP semantic score, realism (discriminator score; FID/KID against real
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
from pbw.data.synthetic import canonical_caption, generate, load_split
from pbw.editing import EditRequest, Editor, EditSettings
from pbw.editing.masks import load_mask
from pbw.evaluation import mean_interval, wilson_interval
from pbw.evaluation.oracle import PAINTED_MIN_SHARE, color_shares, painted_color, region_color
from pbw.metrics import GenerationMetrics, RandomConvFeatures
from pbw.semantic import PromptSet, SemanticNet

MASK_BOX = "0.25,0.25,0.75,0.75"
PART = "body"
COLORS = ("red", "blue", "green", "yellow", "purple", "white", "orange", "black")
PAPER = "paper: cma+adam, w, latent mask"
VARIANTS = {  # name -> (EditSettings overrides, generator constructor overrides); the first is the paper's
    PAPER: ({}, {}),
    "space: W+ (one w per layer)": ({"space": "wplus"}, {}),
    "demodulation: frozen s(w0) (official code)": ({}, {"masked_demodulation": "frozen"}),
    "ablation: mask only CLIP's image": ({"mask_mode": "image"}, {}),
    "ablation: adam only": ({"optimizer": "adam"}, {}),
}
BIGGAN_ROW = "BigGAN: cma+adam, w (block-0 features), latent mask"
TEXT_TO_IMAGE = {  # name -> (generator, latent space); the first of each generator is the paper's
    "StyleGAN2: z (paper)": ("stylegan2", "z"),
    "StyleGAN2: w": ("stylegan2", "w"),
    "StyleGAN2: W+": ("stylegan2", "wplus"),
    "BigGAN: z + class vector (paper)": ("biggan", "z"),
}
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
    first_caption: int = 0


SCALES = {
    "quick": Scale(seeds=2, colors=2, captions=2, real=64, steps=4, generations=2, population=4, crops=4,
                   batch_size=4),
    "full": Scale(seeds=8, colors=8, captions=64, real=512, steps=60, generations=10, population=16, crops=8,
                  batch_size=16),
}


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().float().clamp(-1, 1) + 1) / 2).cpu()


def _edit(editor: Editor, requests: list[EditRequest], settings: EditSettings):
    """Run the requests; returns originals, edited images, masks [N,1,R,R] (ones: whole image) and metrics."""
    results = editor.run(requests, settings, progress=False)
    res = editor.generator.resolution
    masks = [r.mask if r.mask is not None else torch.ones(1, 1, res, res) for r in results]
    return (torch.cat([r.original for r in results]), torch.cat([r.edited for r in results]), torch.cat(masks),
            [r.metrics for r in results])


def _accuracy(hits: list[bool]) -> dict:
    """An accuracy with its 95% Wilson interval."""
    return {"value": float(np.mean(hits)), "ci95": list(wilson_interval(int(sum(hits)), len(hits))), "n": len(hits)}


def _mean(values: list[float]) -> dict:
    return {"value": float(np.mean(values)), "ci95": list(mean_interval(values))}


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
            reqs.append(EditRequest(PromptSet.parse(prompt), codes, mask, f"seed{seed}_{c}"))
            asked.append(c)
    return reqs, asked


def _realism(g, images: torch.Tensor, requests: list[EditRequest]) -> float:
    codes = {k: torch.cat([r.codes[k] for r in requests]) for k in requests[0].codes}
    with torch.no_grad():
        r = g.realism(images, codes)
    return float("nan") if r is None else float(r.mean())


def _masked_edit_row(editor: Editor, requests: list[EditRequest], asked: list[str], settings: EditSettings,
                     real: torch.Tensor) -> tuple[dict, tuple[torch.Tensor, ...]]:
    """Run masked edits; returns their results-table row and (originals, edited, masks)."""
    t0 = time.time()
    x0, x1, masks, metrics = _edit(editor, requests, settings)
    inside, outside = _changes(x0, x1, masks)
    painted = [painted_color(x0[i], x1[i], masks[i, 0]) == c for i, c in enumerate(asked)]
    region = [region_color(x1[i], masks[i, 0]) == c for i, c in enumerate(asked)]
    oracle = _accuracy(painted)
    row = {"kind": "masked edit", "n": len(requests), "space": editor.generator.space(settings.space, True),
           "semantic_score": float(np.mean([m["semantic_score"] for m in metrics])),
           "realism": float(np.mean([m.get("realism", float("nan")) for m in metrics])),
           **_fid_kid(real, x1), "change_inside": inside, "change_outside": outside,
           "oracle_accuracy": oracle["value"], "oracle_ci95": oracle["ci95"],
           "region_accuracy": float(np.mean(region)), "region_ci95": _accuracy(region)["ci95"],
           "seconds": time.time() - t0}
    return row, (x0, x1, masks)


def _text_to_image_row(editor: Editor, test_colors: list[dict[str, str]], settings: EditSettings, seed0: int,
                       real: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Generate from the held-out birds' captions (start images from sample seeds `seed0`...); returns
    the row, the start images and the results."""
    t0 = time.time()
    g = editor.generator
    captions = [canonical_caption(c) for c in test_colors]
    requests = [EditRequest(PromptSet.parse(cap), g.sample(1, seed=seed0 + i), None, f"caption{i}")
                for i, cap in enumerate(captions)]
    x0, x1, _, metrics = _edit(editor, requests, settings)
    box = load_mask(MASK_BOX, g.resolution)[0][0]

    def caption_match(images: torch.Tensor) -> tuple[list[bool], list[float]]:
        body = [region_color(images[i], box[0]) == c[PART] for i, c in enumerate(test_colors)]
        parts = [len(colors_present(images[i], box) & set(c.values())) / len(set(c.values()))
                 for i, c in enumerate(test_colors)]
        return body, parts

    (body, parts), (body0, parts0) = caption_match(x1), caption_match(x0)
    oracle, before = _accuracy(body), _accuracy(body0)
    row = {"kind": "text to image", "n": len(captions), "space": g.space(settings.space, False),
           "captions": captions, "semantic_score": float(np.mean([m["semantic_score"] for m in metrics])),
           "realism": float(np.mean([m.get("realism", float("nan")) for m in metrics])), **_fid_kid(real, x1),
           "oracle_accuracy": oracle["value"], "oracle_ci95": oracle["ci95"],
           "caption_color_recall": float(np.mean(parts)), "caption_color_recall_ci95": _mean(parts)["ci95"],
           "before": {"oracle_accuracy": before["value"], "oracle_ci95": before["ci95"],
                      "caption_color_recall": float(np.mean(parts0)),
                      "realism": _realism(g, x0, requests)},
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
    `generator`/`biggan`/`clip` default to the bundled mini models (the BigGAN rows are left out when
    no BigGAN is given or bundled)."""
    torch.set_grad_enabled(True)
    scale = scale or SCALES["quick" if quick else "full"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if data is None or not Path(data).exists():
        data = Path(data or out / "real_birds")
        generate(data, n=max(2 * scale.real, 64, 8 * (scale.first_caption + scale.captions)), resolution=32, seed=0)
    real, _, _ = load_split(data, "train", limit=scale.real)
    test_real, test_colors, _ = load_split(data, "test", limit=scale.first_caption + scale.captions)
    test_real, test_colors = test_real[scale.first_caption:], test_colors[scale.first_caption:]
    if len(test_colors) < scale.captions:
        raise ValueError(f"{data} has only {len(test_colors)} test images after the first {scale.first_caption}; "
                         f"{scale.captions} captions are needed")
    paths = {"stylegan2": generator or mini_generator_path()}
    if biggan is None:
        with contextlib.suppress(FileNotFoundError):  # no bundled BigGAN: leave its rows out
            biggan = mini_generator_path("biggan")
    if biggan is not None:
        paths["biggan"] = biggan
    semantic = SemanticNet.from_spec(clip or mini_clip_spec(), crops=scale.crops)
    editors: dict[tuple, Editor] = {}

    def editor(family: str, **kwargs) -> Editor:
        key = (family, *sorted(kwargs.items()))
        if key not in editors:
            editors[key] = Editor(load_generator(paths[family], **kwargs), semantic, device="cpu")
        return editors[key]

    g = editor("stylegan2").generator
    if real.shape[-1] != g.resolution:
        real = torch.nn.functional.interpolate(real, size=g.resolution, mode="area")
    base = EditSettings(optimizer="cma+adam", steps=scale.steps, lr=scale.lr, population=scale.population,
                        generations=scale.generations, sigma0=0.5, lam=5.0, crops=scale.crops, mask_mode="latent",
                        seed=0, batch_size=scale.batch_size)
    colors = list(COLORS[:scale.colors])
    requests, asked = _masked_requests(g, scale, colors)

    results: dict = {"scale": asdict(scale), "mask_box": MASK_BOX, "part": PART, "colors": colors,
                     "settings": asdict(base), "variants": {}, "text_to_image": {}}
    for name, (overrides, g_kwargs) in tqdm(VARIANTS.items(), desc="masked variants"):
        row, (x0_all, x1, masks) = _masked_edit_row(editor("stylegan2", **g_kwargs), requests, asked,
                                                    replace(base, **overrides), real)
        results["variants"][name] = row
        _grid(out / f"grid_{_slug(name)}.png", x0_all, x1, masks)
    # the unedited starting images: the region oracle's chance level (already the asked color), D/FID reference
    region0 = [region_color(x0_all[i], masks[i, 0]) == c for i, c in enumerate(asked)]
    results["variants"]["reference: unedited originals"] = {
        "kind": "no edit", "n": len(requests), "semantic_score": float("nan"), "realism": _realism(g, x0_all, requests),
        **_fid_kid(real, x0_all), "change_inside": 0.0, "change_outside": 0.0,
        "oracle_accuracy": float("nan"),  # nothing was painted
        "region_accuracy": float(np.mean(region0)), "region_ci95": _accuracy(region0)["ci95"], "seconds": 0.0}
    if "biggan" in paths:  # the paper's method on the class-conditional generator (random species)
        b_editor = editor("biggan")
        b_requests, b_asked = _masked_requests(b_editor.generator, scale, colors)
        row, images = _masked_edit_row(b_editor, b_requests, b_asked, base, real)
        results["variants"][BIGGAN_ROW] = row
        _grid(out / "grid_biggan.png", *images)

    # text-to-image from held-out captions (whole image, no mask), start images from fresh sample seeds
    for name, (family, space) in tqdm(TEXT_TO_IMAGE.items(), desc="text to image"):
        if family in paths:
            row, x0, x1 = _text_to_image_row(editor(family), test_colors, replace(base, space=space),
                                             scale.first_seed + 1000, real)
            results["text_to_image"][name] = row
            _grid(out / f"grid_text_to_image_{_slug(name)}.png", x0, x1)
    save_image(_to01(test_real), out / "grid_heldout_real.png", nrow=min(len(test_real), 16), padding=1)
    results["seconds_total"] = time.time() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))
    return results


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(":")[-1].strip())


TABLE_COLUMNS = ("n", "oracle_accuracy", "region_accuracy", "change_inside", "change_outside", "semantic_score",
                 "realism", "fid", "kid", "seconds")
T2I_COLUMNS = ("n", "oracle_accuracy", "caption_color_recall", "semantic_score", "realism", "fid", "kid", "seconds")


def _cell(row: dict, column: str) -> str:
    v = row.get(column, "")
    if column.endswith("accuracy") and f"{column.split('_')[0]}_ci95" in row and v == v:
        lo, hi = row[f"{column.split('_')[0]}_ci95"]
        return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def results_markdown(results: dict) -> str:
    """The results tables (markdown), accuracies with their 95% Wilson intervals in brackets."""
    lines = [f"# pbw miniature reproduction ({results['scale']})", "",
             f"Masked edits: \"a bird with a <color> {results['part']}\" for colors {results['colors']}, "
             f"mask = box {results['mask_box']}. Oracle accuracy = the color the edit painted into the mask "
             f"(the palette color whose share of the masked pixels grew most, now at least {PAINTED_MIN_SHARE:.0%} "
             "of them) is the asked color; region accuracy (stricter: the background in the box counts) = the "
             "masked region's median pixel color, snapped to the palette, is the asked color; [lo, hi] = 95% "
             "Wilson interval; change = mean |pixel change| (0..1) inside / outside the mask; realism = "
             "discriminator score (higher = more real); FID/KID vs real synthetic birds with RandomConvFeatures.", "",
             "| variant | " + " | ".join(TABLE_COLUMNS) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, row in results["variants"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(row, c) for c in TABLE_COLUMNS) + " |")
    t2i = results.get("text_to_image", {})
    if t2i:
        lines += ["", "Text to image from held-out captions (no mask): oracle = the body color in the central box "
                  "matches the caption's; caption color recall = share of the caption's colors present (>= "
                  f"{PRESENT_FRACTION:.0%} of the box's pixels); \"before\" = the start images.", "",
                  "| generator: space | " + " | ".join(T2I_COLUMNS) + " | before: oracle | before: realism |",
                  "|---" * (len(T2I_COLUMNS) + 3) + "|"]
        for name, row in t2i.items():
            b = row["before"]
            lines.append(f"| {name} | " + " | ".join(_cell(row, c) for c in T2I_COLUMNS)
                         + f" | {_cell(b, 'oracle_accuracy')} | {b['realism']:.3f} |")
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
                      help="the first sample seed (masked edits; text to image starts 1000 later; default 1000, "
                           "others give held-out seeds)")
    mini.add_argument("--first-caption", type=int, default=None,
                      help="skip this many held-out test birds before taking the captions (default 0)")
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
