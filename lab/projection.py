"""Photo projection measured in the miniature: project held-out drawn birds into the bundled mini
generators (with and without pivotal tuning), paint their bodies with words, and the same on samples.
Run by `python -m lab.project_mini`; imports the product, which never imports it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pbw.editing.project import ProjectSettings, project, reconstruction, resolved
from pbw.editing.result import EditResult
from pbw.evaluation.stats import mean_interval, wilson_interval

# ---- measurement in the miniature -----------------------------------------------------------------
MASK_BOX = "0.25,0.25,0.75,0.75"
COLORS = ("red", "blue", "green", "yellow", "purple", "white", "orange", "black")
EDIT_SCALE = dict(
    optimizer="cma+adam", steps=30, generations=5, population=8, crops=4, lr=0.05, sigma0=0.5, lam=5.0, batch_size=16
)  # the reproduction's "full" scale is 60/10/16/8: ~4x the CPU time


def held_out_birds(root: str | Path, n: int, seed: int = 1) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """`n` drawn synthetic birds at 32 px from the test split of a dataset drawn with `seed` (the bundled
    mini models were trained on seed 0's birds, so any other seed's are held out): images [n, 3, 32, 32]
    in [-1, 1] and their part colors."""
    from pbw.data.synthetic import generate, load_split

    root = Path(root)
    if not (root / "CUB_200_2011").is_dir():
        generate(root, n=max(8 * n, 40), resolution=32, seed=seed, progress=False)
    images, colors, _ = load_split(root, "test", limit=n)
    if len(images) < n:
        raise ValueError(f"{root} has {len(images)} test birds, fewer than {n}: delete it to redraw")
    return images, colors


def _changes(x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Mean |pixel change| (0..1, channel-averaged) inside and outside the mask (the reproduction's measure)."""
    d = ((x1.clamp(-1, 1) - x0.clamp(-1, 1)).abs() / 2).mean(1, keepdim=True)
    inside = resize_mask_like(mask, d) > 0.5
    return float(d[inside].mean()), float(d[~inside].mean())


def resize_mask_like(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    from pbw.models.maskable import resize_mask

    return resize_mask(mask.float(), x.shape[-1]).expand(x.shape[0], 1, -1, -1)


def measure_mini(
    family: str,
    photos: torch.Tensor,
    settings: ProjectSettings | None = None,
    colors_per: int = 2,
    edit_settings: dict | None = None,
    semantic=None,
    progress: bool = True,
    cache: str | Path | None = None,
    body_colors: Sequence[str] | None = None,
) -> dict:
    """Project `photos` into the bundled mini `family` generator (with pivotal tuning as `settings` say),
    then paint each projection's body (mask `MASK_BOX`, "a bird with a <color> body", `colors_per` colors
    per photo, cycling through `COLORS`) and the same on samples (seeds 1000...). Returns per-photo
    reconstruction metrics (before and after tuning, PSNR / L1 / feature distance = 1 - cosine of the tiny
    CLIP's image embeddings) and, for photos and samples, the oracle's accuracy (`painted_color`) and the
    change inside / outside the mask; the edits of photos run twice: from the tuned projections and from the
    latent-only ones (the same codes with the checkpoint's weights). With `cache`, projections are saved
    there (cache/<family>/bird<i>) and reused by a later run with the same photos and settings. With the
    photos' `body_colors`, the photo rows also count only the asks of a color the body does not already have
    (the oracle cannot see a color painted over itself)."""
    from dataclasses import replace

    from pbw.assets import mini_clip_spec, mini_generator_path
    from pbw.checkpoints import load_generator
    from pbw.editing.editor import Editor
    from pbw.editing.masks import load_mask
    from pbw.editing.module import EditRequest, EditSettings
    from pbw.evaluation.oracle import painted_color
    from pbw.semantic import PromptSet, SemanticNet

    g = load_generator(mini_generator_path(family))
    semantic = semantic or SemanticNet.from_spec(mini_clip_spec(), crops=(edit_settings or EDIT_SCALE)["crops"])
    embed = lambda x: semantic.encode_images(semantic.views(x, None, crops=0))  # noqa: E731
    rows, projections, recons = [], [], []
    for i in tqdm(range(len(photos)), desc=f"projecting into the mini {family}", disable=not progress):
        folder = Path(cache) / family / f"bird{i}" if cache is not None else None
        r = None
        if folder is not None and (folder / "latents.pt").is_file():
            r = EditResult.load(folder, g)
            wanted = asdict(resolved(g, settings))
            if not (torch.equal(r.original, photos[i : i + 1]) and {k: r.settings.get(k) for k in wanted} == wanted):
                r = None  # another photo or other settings: project again
        if r is None:
            r = project(photos[i : i + 1], g, settings, device="cpu", progress=False, name=f"bird{i}")
            if folder is not None:
                r.save(folder)
        with torch.no_grad():
            e_photo = embed(r.original)
            untuned = g.decode(r.w0, cond=r.codes)
            tuned = reconstruction(r, g)
            feat = [float(1 - (embed(x) * e_photo).sum()) for x in (untuned, tuned)]
        m = r.metrics
        rows.append(
            {
                "psnr_start": m["psnr_start"],
                "psnr_latent": m.get("psnr_before_tuning", m["psnr"]),
                "psnr_tuned": m["psnr"],
                "l1_latent": m.get("l1_before_tuning", m["l1"]),
                "l1_tuned": m["l1"],
                "feature_latent": feat[0],
                "feature_tuned": feat[1],
                "seconds": m["seconds"],
                "latent_seconds": m["latent_seconds"],
            }
        )
        projections.append(r)
        recons.append(torch.cat([untuned, tuned]))
    mask = load_mask(MASK_BOX, g.resolution)[0]
    asked = [COLORS[(colors_per * i + k) % len(COLORS)] for i in range(len(photos)) for k in range(colors_per)]
    prompt = lambda c: PromptSet.parse(f"a bird with a {c} body")  # noqa: E731
    photo_reqs = [
        EditRequest(prompt(c), mask=mask, base=projections[j // colors_per], name=f"photo{j // colors_per}_{c}")
        for j, c in enumerate(asked)
    ]
    latent_reqs = [
        EditRequest(req.prompt, mask=mask, base=replace(req.base, generator_state=None), name=req.name)
        for req in photo_reqs
    ]
    sample_reqs = [
        EditRequest(
            prompt(c), codes=g.sample(1, seed=1000 + j // colors_per), mask=mask, name=f"sample{j // colors_per}_{c}"
        )
        for j, c in enumerate(asked)
    ]
    asked_photo = {id(req): j // colors_per for reqs in (photo_reqs, latent_reqs) for j, req in enumerate(reqs)}
    editor = Editor(g, semantic, device="cpu")
    s = EditSettings(**(edit_settings or EDIT_SCALE))
    edits = {}
    for kind, reqs in (("photos", photo_reqs), ("photos, latent only", latent_reqs), ("samples", sample_reqs)):
        t0 = time.perf_counter()
        results = editor.run(reqs, s, progress=False)
        x0 = torch.cat([r.original for r in results])
        x1 = torch.cat([r.edited for r in results])
        inside, outside = _changes(x0, x1, mask)
        ok = [painted_color(x0[j], x1[j], mask[0, 0]) == c for j, c in enumerate(asked)]
        new = [
            v
            for v, req, c in zip(ok, reqs, asked, strict=True)
            if body_colors is not None and req.base is not None and body_colors[asked_photo[id(req)]] != c
        ]
        edits[kind] = {
            "n": len(reqs),
            "oracle": [float(v) for v in ok],
            "oracle_new_color": [float(v) for v in new],
            "change_inside": inside,
            "change_outside": outside,
            "seconds": time.perf_counter() - t0,
            "images": (x0, x1),
        }
    return {
        "family": family,
        "projection": rows,
        "edits": edits,
        "asked": asked,
        "images": {
            "photos": photos,
            "latent": torch.cat([x[:1] for x in recons]),
            "tuned": torch.cat([x[1:] for x in recons]),
        },
        "settings": asdict(settings or ProjectSettings()),
        "edit_settings": dict(edit_settings or EDIT_SCALE),
    }


def measurement_markdown(results: list[dict]) -> str:
    """The measurement's tables (markdown): reconstruction (mean +- 95% CI) and edits on photos vs samples."""

    def ci(values, fmt="{:.2f}"):
        lo, hi = mean_interval(values)
        return (fmt + " ± " + fmt).format((lo + hi) / 2, (hi - lo) / 2) if len(values) > 1 else fmt.format(values[0])

    def share(values):  # a proportion with its Wilson interval
        lo, hi = wilson_interval(sum(bool(v) for v in values), len(values))
        return f"{sum(values) / len(values):.2f} [{lo:.2f}, {hi:.2f}]"

    lines = [
        "| generator | n | PSNR start (dB) | PSNR latent (dB) | PSNR + tuning (dB) | L1 latent | L1 + tuning "
        "| feature dist. latent | feature dist. + tuning | s / projection (latent only) |",
        "|---" * 10 + "|",
    ]
    for r in results:
        p = r["projection"]
        col = lambda k: [row[k] for row in p]  # noqa: E731
        lines.append(
            f"| mini {r['family']} | {len(p)} | {ci(col('psnr_start'))} | {ci(col('psnr_latent'))} | "
            f"{ci(col('psnr_tuned'))} | {ci(col('l1_latent'), '{:.4f}')} | {ci(col('l1_tuned'), '{:.4f}')} | "
            f"{ci(col('feature_latent'), '{:.4f}')} | {ci(col('feature_tuned'), '{:.4f}')} | "
            f"{ci(col('seconds'), '{:.1f}')} ({ci(col('latent_seconds'), '{:.1f}')}) |"
        )
    lines += [
        "",
        "| generator | edited | n | oracle accuracy [95% CI] | oracle, asked color not the body's (n) | change inside "
        "| change outside | s / edit |",
        "|---" * 8 + "|",
    ]
    for r in results:
        for kind, e in r["edits"].items():
            new = e.get("oracle_new_color") or []
            lines.append(
                f"| mini {r['family']} | {kind} | {e['n']} | {share(e['oracle'])} | "
                f"{share(new) + f' ({len(new)})' if new else '–'} | {e['change_inside']:.4f} | "
                f"{e['change_outside']:.4f} | {e['seconds'] / e['n']:.1f} |"
            )
    return "\n".join(lines) + "\n"
