#!/usr/bin/env python
"""Measure photo projection in the miniature: project held-out drawn synthetic birds into the
bundled mini StyleGAN2 and BigGAN (reconstruction with and without pivotal tuning), then paint their
bodies with words, and the same on generated samples.

    OMP_NUM_THREADS=1 python -m lab.project_mini --n 8 --out out/project_mini

Writes OUT/results.md (the tables), OUT/results.json, OUT/grid_<family>.png (rows: photo, latent-only
reconstruction, tuned reconstruction, edited photo (tuned), edited photo (latent only), sample, edited
sample); OUT/projections caches the projections for a rerun and, with --figure, the
README's picture (photo | reconstruction | edited: three birds, each asked for a body color it does not
have, edited at the reproduction's full scale; `--figure-only` makes just that). The measurement itself is
`lab.projection.measure_mini`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from lab.projection import (
    EDIT_SCALE,
    MASK_BOX,
    ProjectSettings,
    held_out_birds,
    measure_mini,
    measurement_markdown,
    project,
    reconstruction,
)
from pbw.editing.result import EditResult, to01

FIGURE_COLORS = ("blue", "yellow", "red", "purple")
FULL_SCALE = dict(EDIT_SCALE, steps=60, generations=10, population=16, crops=8)


def make_figure(
    path: Path,
    photos: torch.Tensor,
    body_colors: list[str],
    settings: ProjectSettings,
    cache: Path,
    family: str = "stylegan2",
    k: int = 3,
) -> None:
    """photo | reconstruction | edited for the first k photos, each painted a body color it does not have."""
    from pbw.assets import mini_clip_spec, mini_generator_path
    from pbw.checkpoints import load_generator
    from pbw.editing import Editor, EditRequest, EditSettings, load_mask
    from pbw.semantic import PromptSet, SemanticNet

    g = load_generator(mini_generator_path(family))
    mask = load_mask(MASK_BOX, g.resolution)[0]
    requests, recons = [], []
    for i in range(k):
        folder = cache / family / f"bird{i}"
        r = EditResult.load(folder, g) if (folder / "latents.pt").is_file() else None
        if r is None or not torch.equal(r.original, photos[i : i + 1]):
            r = project(photos[i : i + 1], g, settings, device="cpu", name=f"bird{i}")
        color = next(c for c in FIGURE_COLORS[i:] + FIGURE_COLORS if c != body_colors[i])
        requests.append(EditRequest(PromptSet.parse(f"a bird with a {color} body"), mask=mask, base=r, name=color))
        recons.append(reconstruction(r, g))
    semantic = SemanticNet.from_spec(mini_clip_spec(), crops=FULL_SCALE["crops"])
    edited = Editor(g, semantic, device="cpu").run(requests, EditSettings(**FULL_SCALE), progress=False)
    cols = [photos[:k], torch.cat(recons), torch.cat([e.edited for e in edited])]
    panel = torch.stack([to01(x) for x in cols], 1).flatten(0, 1)  # per bird: photo | reconstruction | edited
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(F.interpolate(panel, scale_factor=3, mode="nearest"), path, nrow=3, padding=2, pad_value=1.0)
    print(f"figure: {path} (asked: {', '.join(e.name for e in edited)})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8, help="held-out birds per generator")
    p.add_argument("--colors-per", type=int, default=2, help="body colors asked per photo (and per sample)")
    p.add_argument("--families", nargs="+", default=["stylegan2", "biggan"])
    p.add_argument("--out", default="out/project_mini")
    p.add_argument("--data", default=None, help="held-out birds root (default OUT/birds_seed1, drawn with seed 1)")
    p.add_argument("--figure", default=None, help="also write the README picture here (PNG)")
    p.add_argument("--figure-only", action="store_true", help="only make the --figure")
    for f in fields(ProjectSettings):
        if f.type in ("int", "float"):
            p.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=int if f.type == "int" else float,
                default=None,
                help=f"ProjectSettings.{f.name} (default {f.default})",
            )
    p.add_argument("--space", default=None)
    for k in ("steps", "generations", "population", "crops"):
        p.add_argument(f"--edit-{k}", type=int, default=None, help=f"EditSettings.{k} (default {EDIT_SCALE[k]})")
    args = p.parse_args(argv)
    torch.set_grad_enabled(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photos, colors = held_out_birds(args.data or out / "birds_seed1", args.n)
    settings = ProjectSettings(
        **{f.name: getattr(args, f.name) for f in fields(ProjectSettings) if getattr(args, f.name, None) is not None}
    )
    edit = {
        **EDIT_SCALE,
        **{
            k: getattr(args, f"edit_{k}")
            for k in ("steps", "generations", "population", "crops")
            if getattr(args, f"edit_{k}") is not None
        },
    }
    t0 = time.time()
    if args.figure:
        make_figure(Path(args.figure), photos, [c["body"] for c in colors], settings, out / "projections")
        if args.figure_only:
            return
    results = []
    for family in args.families:
        r = measure_mini(
            family,
            photos,
            settings,
            args.colors_per,
            edit,
            cache=out / "projections",
            body_colors=[c["body"] for c in colors],
        )
        results.append(r)
        im = r["images"]
        x0p, x1p = r["edits"]["photos"]["images"]
        x0s, x1s = r["edits"]["samples"]["images"]
        x1l = r["edits"]["photos, latent only"]["images"][1]
        every = slice(0, None, args.colors_per)  # the first color of each photo / sample
        rows = [im["photos"], im["latent"], im["tuned"], x1p[every], x1l[every], x0s[every], x1s[every]]
        save_image(torch.cat([to01(x) for x in rows]), out / f"grid_{family}.png", nrow=len(photos), padding=1)
        print(measurement_markdown(results), flush=True)
    clean = [
        {k: v for k, v in r.items() if k != "images"}
        | {"edits": {kind: {k: v for k, v in e.items() if k != "images"} for kind, e in r["edits"].items()}}
        for r in results
    ]
    (out / "results.json").write_text(json.dumps({"results": clean, "seconds_total": time.time() - t0}, indent=2))
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    md = (
        f"# Photo projection in the miniature\n\n{args.n} held-out drawn birds (seed 1, test split); projection "
        f'settings {settings}; edits: mask {"0.25,0.25,0.75,0.75"}, "a bird with a <color> body", '
        f"{args.colors_per} colors per photo, {edit}.\n\n"
        + measurement_markdown(results)
        + f"\nTotal {time.time() - t0:.0f} s; load average at the end {load} (1 / 5 / 15 min; times grow with it).\n"
    )
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
