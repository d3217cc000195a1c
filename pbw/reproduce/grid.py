"""`pbw-reproduce grid --out docs/mini_edits.png`: the README's picture of the miniature.

Sample seeds (rows) x body colors (columns, after the unedited original) edited by the bundled mini
StyleGAN2 and BigGAN, one block each: prompt "a bird with a <color> body" inside the body the part
segmenter finds in each start image (`part:body`), with the settings of the generator's edit config
(edit/mini.yaml, mini_biggan.yaml: what `pbw-edit --config` runs) and every edit of a
generator in one batch. About two minutes on 2 CPU cores for 4 seeds x 3 colors.

`--blocks regions` adds (or, alone, draws) a block of two-region edits on the mini StyleGAN2: each seed's
original, then one edit per color pair "<body>/<wings>" (`--pairs`) with two regions, "a bird with a
<body> body" in part:body and "a bird with <wings> wings" in part:wing, as `pbw-edit --region`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from pbw.configs import config_path
from pbw.editing.figures import panel_grid, stack
from pbw.editing.masks import MaskError, load_mask
from pbw.editing.request import EditRequest, Region
from pbw.editing.result import to01
from pbw.semantic import PromptSet

EDIT_CONFIGS = {"stylegan2": "mini.yaml", "biggan": "mini_biggan.yaml"}
TITLES = {"stylegan2": "StyleGAN2", "biggan": "BigGAN"}
PROMPT = "a bird with a {color} body"
MASK = "part:body"
PANEL_SIDE = 128
BLOCKS = ("stylegan2", "biggan", "regions")
REGIONS = (("a bird with a {} body", "part:body"), ("a bird with {} wings", "part:wing"))


class GridError(ValueError):
    """A grid that cannot be made as asked (bad seeds, colors or settings; no body in a start image)."""


def parse_seeds(text: str) -> list[int]:
    """Seeds from "0-3", "0,2,5" or "0-3,7"."""
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise GridError(f"seeds {text!r}: write whole numbers and ranges, e.g. 0-3 or 0,2,5") from None
        if lo < 0 or hi < lo:
            raise GridError(f"seeds {text!r}: {part.strip()!r} is not a range of seeds >= 0 (write low-high)")
        seeds.extend(range(lo, hi + 1))
    return seeds


def parse_colors(text: str) -> list[str]:
    """Colors from "red,blue,yellow"."""
    colors = [c.strip() for c in text.split(",")]
    if not all(colors):
        raise GridError(f"colors {text!r}: write color names separated by commas, e.g. red,blue,yellow")
    return colors


def edit_args(family: str):
    """pbw-edit's instantiated arguments from the generator's edit config, with the bundled models."""
    from pbw.assets import mini_clip_spec, mini_generator_path
    from pbw.editing.options import build_parser

    config = config_path(f"edit/{EDIT_CONFIGS[family]}")
    parser = build_parser()
    return parser.instantiate(
        parser.parse_args(
            [
                "--config",
                str(config),
                "--generator",
                str(mini_generator_path(family)),
                "--clip",
                mini_clip_spec(),
                "--progress",
                "false",
            ]
        )
    )


def _edit_block(
    family: str, seeds: list[int], columns: list[str], requests_for, title, overrides: dict, log
) -> Image.Image:
    """A block of edits by the bundled `family` generator with its edit config's settings: a row per seed,
    its original then one edit per column; `requests_for(seed, codes, image, feather)` makes a seed's
    requests (one per column), `title(resolution)` the block's title."""
    from pbw.editing.options import build_editor

    args = edit_args(family)
    try:
        settings = replace(args.settings, batch_size=len(seeds) * len(columns), **overrides)
    except ValueError as e:
        raise GridError(str(e)) from None
    editor = build_editor(args)
    g = editor.generator
    originals, requests = [], []
    for seed in seeds:
        codes = {k: v.to(editor.device) for k, v in g.sample(1, seed=seed).items()}
        with torch.no_grad():
            image = g.decode(g.encode(codes), cond=codes)
        try:
            requests += requests_for(seed, codes, image, args.feather)
        except MaskError as e:
            raise GridError(f"{TITLES[family]} seed {seed}: {e}; choose other --seeds") from None
        originals.append(to01(image))
    t0 = time.time()
    results = editor.run(requests, settings, progress=False)
    log(f"{TITLES[family]}: {len(requests)} edits in {time.time() - t0:.0f} s")
    n = len(columns)
    rows = [[x] + [to01(r.edited) for r in results[i * n : (i + 1) * n]] for i, x in enumerate(originals)]
    return panel_grid(
        rows, ["original", *columns], [f"seed {s}" for s in seeds], title=title(g.resolution), min_side=PANEL_SIDE
    )


def generator_block(family: str, seeds: list[int], colors: list[str], overrides: dict, log=print) -> Image.Image:
    """One generator's block: a row per seed, the original then one edit per color."""

    def requests_for(seed, codes, image, feather):
        mask, notes = load_mask(MASK, image.shape[-1], feather, image=image)
        return [
            EditRequest(PromptSet.parse(PROMPT.format(color=c)), codes, mask, f"seed {seed} {c}", notes) for c in colors
        ]

    prompt = PROMPT.format(color="<color>")
    return _edit_block(
        family,
        seeds,
        colors,
        requests_for,
        lambda res: f'{TITLES[family]} ({res} px, bundled): "{prompt}" inside {MASK}',
        overrides,
        log,
    )


def regions_block(seeds: list[int], pairs: list[str], overrides: dict, log=print) -> Image.Image:
    """The mini StyleGAN2's two-region edits: a row per seed, the original then one edit per color pair
    "<body>/<wings>"."""
    colors = [p.split("/") for p in pairs]
    if any(len(c) != 2 or not all(c) for c in colors):
        raise GridError(f"pairs {','.join(pairs)!r}: write body/wings color pairs, e.g. red/yellow,blue/white")

    def requests_for(seed, codes, image, feather):
        masks = [load_mask(mask, image.shape[-1], feather, image=image)[0] for _, mask in REGIONS]
        return [
            EditRequest(
                codes=codes,
                name=f"seed {seed} {'/'.join(pair)}",
                regions=[
                    Region(PromptSet.parse(t.format(c)), m) for (t, _), c, m in zip(REGIONS, pair, masks, strict=True)
                ],
            )
            for pair in colors
        ]

    return _edit_block(
        "stylegan2",
        seeds,
        pairs,
        requests_for,
        lambda res: (
            f'StyleGAN2 ({res} px, bundled), two regions in one edit: "{REGIONS[0][0].format("<body>")}" '
            f'in {REGIONS[0][1]} and "{REGIONS[1][0].format("<wings>")}" in {REGIONS[1][1]}'
        ),
        overrides,
        log,
    )


def edit_grid(
    out: str | Path,
    seeds: list[int],
    colors: list[str],
    log=print,
    blocks: tuple[str, ...] = ("stylegan2", "biggan"),
    pairs: list[str] = ("red/yellow", "blue/white"),
    **overrides,
) -> Path:
    """Write the grid of the bundled generators' edits to `out` (a PNG): the `blocks` named (of `BLOCKS`;
    `regions`: two-region edits, body/wings color `pairs`); `overrides`: EditSettings fields (e.g.
    steps=2 for a smoke run). Returns the path."""
    if not seeds or not colors or not blocks:
        raise GridError("the grid needs at least one seed, one color and one block")
    unknown = sorted(set(blocks) - set(BLOCKS))
    if unknown:
        raise GridError(f"unknown blocks {unknown}; choose of {', '.join(BLOCKS)}")
    picture = stack(
        [
            regions_block(seeds, list(pairs), overrides, log)
            if block == "regions"
            else generator_block(block, seeds, colors, overrides, log)
            for block in blocks
        ]
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    log(f"wrote {out} ({picture.width}x{picture.height})")
    return out
