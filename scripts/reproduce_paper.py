"""Every paper experiment (CUB text to image, bedrooms, Places) at reduced size, timed: see reproduce_paper.sh.

For each experiment it runs `pbw-reproduce run` with the experiment's config, a few prompts and
seeds, the weights found in WEIGHTS_DIR (and the arguments after `--`, e.g. `-- --settings.generations 10`),
and prints the seconds per edit of every variant. What WEIGHTS_DIR
lacks is replaced by networks of the same sizes with random weights (the results then only time the
full-size path; their scores mean nothing): the generators, the CLIPs (ViT-B-32 optimizing, ViT-L-14
judging), LPIPS (left out), the CUB captions and the Places365 class names.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from pbw.configs import config_path

ROOT = Path(__file__).resolve().parents[1]
PLACES_CLASSES = ["mountain", "lake/natural", "beach", "field/wild", "church/outdoor", "castle", "tower", "skyscraper"]
CAPTIONS = [
    "this bird has a red crown and a short pointed beak",
    "a small yellow bird with black wings and a white belly",
    "a blue bird with a long tail and grey feet",
    "this brown bird has white spots on its wings",
]

# name -> (config, generator name, weights file, the size of its random stand-in)
EXPERIMENTS = {
    "cub_text_to_image": ("cub_text_to_image.yaml", "cub", "cub-256.pkl", ("stylegan2", 256)),
    "bedroom": ("bedroom.yaml", "bedroom", "stylegan2_bedroom.pt", ("stylegan2", 256)),
    "places": ("places.yaml", "places", "biggan-places256.pth", ("biggan", 256)),
}
CLIPS = {  # role -> (open_clip model, file in WEIGHTS_DIR)
    "clip": ("ViT-B-32-quickgelu", "clip-vit-b-32-openai.bin"),
    "evaluator": ("ViT-L-14-quickgelu", "clip-vit-l-14-openai.bin"),
}
LPIPS_FILE = "alexnet-owt-7be5be79.pth"


def random_generator(family: str, resolution: int, toy: bool, path: Path) -> Path:
    """Write a pbw checkpoint of a random-weight generator (and discriminator) of the paper's size."""
    from pbw.checkpoints.core import ImportedNetworks, save_pbw_checkpoint
    from pbw.models.biggan import BigGANDiscriminator, BigGANGenerator
    from pbw.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

    torch.manual_seed(0)
    if family == "stylegan2":
        g_kwargs = dict(resolution=resolution) | (
            dict(channel_base=256, channel_max=16, z_dim=32, w_dim=32) if toy else {}
        )
        d_kwargs = {k: v for k, v in g_kwargs.items() if k in ("resolution", "channel_base", "channel_max")}
        G, D = StyleGAN2Generator(**g_kwargs), StyleGAN2Discriminator(**d_kwargs)
    else:
        arch = dict(resolution=resolution, ch=8 if toy else 96, n_classes=365)
        g_kwargs = arch | dict(dim_z=20 if toy else 140, shared_dim=8 if toy else 128, attention=[] if toy else [128])
        d_kwargs = arch | dict(attention=[] if toy else [64])
        G, D = BigGANGenerator(**g_kwargs), BigGANDiscriminator(**d_kwargs)
    networks = ImportedNetworks(
        format="random", family=family, generator_kwargs=g_kwargs, generators={"generator_ema": G.state_dict()}
    )
    networks.discriminator_kwargs, networks.discriminator = d_kwargs, D.state_dict()
    save_pbw_checkpoint(networks, path, source="random weights (timing only)")
    return path


def experiment_args(name: str, weights: Path | None, work: Path, toy: bool) -> tuple[list[str], list[str]]:
    """The reproduce command's arguments for one experiment, and notes on what was replaced."""
    config, generator, weights_file, (family, resolution) = EXPERIMENTS[name]
    args, notes = ["--config", str(config_path(f"reproduce/{config}"))], []
    found = weights / weights_file if weights else None
    if found is not None and found.exists() and not toy:
        args += [f"--generators.{generator}.path", str(found)]
    else:
        path = random_generator(family, 32 if toy else resolution, toy, work / f"{name}_random.pt")
        args += [f"--generators.{generator}.path", str(path)]
        notes.append(f"{generator}: random weights ({'toy' if toy else f'full size, {resolution} px'})")
    if name == "places":
        names = weights / "categories_places365.txt" if weights else None
        if names is None or not names.exists() or toy:
            names = work / "categories_places365.txt"
            filler = [f"/x/class_{i}" for i in range(365 - len(PLACES_CLASSES))]
            names.write_text("\n".join(f"/x/{c} {i}" for i, c in enumerate(PLACES_CLASSES + filler)) + "\n")
            notes.append("places: stand-in class names")
        args += [f"--generators.{generator}.class_names", str(names)]
    if name == "cub_text_to_image":
        cub = weights / "CUB_200_2011" if weights else None
        if cub is None or not cub.exists() or toy:
            cub = work / "captions.txt"
            cub.write_text("\n".join(CAPTIONS) + "\n")
            notes.append("cub: stand-in captions")
            args += ["--tasks.text_to_image.prompts.count", str(len(CAPTIONS))]
        args += ["--tasks.text_to_image.prompts.captions", str(cub)]
    if toy:
        args += ["--clip", "pbw-tiny-clip:random", "--evaluators", "[pbw-tiny-clip:random]"]
        args += ["--allow_same_evaluator", "true", "--device", "cpu"]
        args += ["--settings.population", "4", "--settings.generations", "2", "--settings.steps", "2"]
        args += ["--settings.crops", "2", "--settings.batch_size", "2"]
    else:
        clips = {}
        for role, (model, file) in CLIPS.items():
            found = weights / file if weights else None
            clips[role] = f"{model}:{found}" if found is not None and found.exists() else f"{model}:random"
            if not clips[role].endswith(file):
                notes.append(f"{role} CLIP: random weights")
        args += ["--clip", clips["clip"], "--evaluators", f"[{clips['evaluator']}]"]
        args += ["--allow_same_evaluator", "true"]  # two random CLIPs of different sizes are not the same
    lpips = weights / LPIPS_FILE if weights else None
    if lpips is not None and lpips.exists() and not toy:
        args += ["--lpips_weights", str(lpips)]
    else:
        args += ["--lpips", "false"]
        notes.append("no LPIPS (L1 preservation only)")
    return args, notes


def seconds_per_edit(results: Path) -> dict[str, float]:
    """Seconds per edit of each variant (over the experiment's tasks, weighted by their edits), from results.json."""
    by_variant: dict[str, list[float]] = {}
    for task in json.loads(results.read_text())["tasks"].values():
        for variant, row in task["rows"].items():
            if row.get("seconds_per_edit"):
                seconds, edits = by_variant.setdefault(variant, [0.0, 0])
                by_variant[variant] = [seconds + row["seconds_per_edit"] * row["n"], edits + row["n"]]
    return {k: seconds / edits for k, (seconds, edits) in by_variant.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="?", type=Path, default=None, help="WEIGHTS_DIR (default: none, random)")
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (CI)")
    p.add_argument("--out", type=Path, default=ROOT / "out/reproduce_paper", help="results folders go here")
    p.add_argument("--prompts", type=int, default=2, help="prompts per task (default 2)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per task (default 2)")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS), help="comma-separated subset")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # for `pbw-reproduce run`
    a = p.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    if a.weights is not None and not a.weights.is_dir():
        p.exit(2, f"reproduce_paper: WEIGHTS_DIR {a.weights} is not a folder\n")
    names = a.experiments.split(",")
    if unknown := [n for n in names if n not in EXPERIMENTS]:
        p.exit(2, f"reproduce_paper: unknown experiments {unknown}; choose from {list(EXPERIMENTS)}\n")
    prompts, seeds = (1, 1) if a.dry_run else (a.prompts, a.seeds)
    work = a.out / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    table, failed = [], []
    for name in names:
        args, notes = experiment_args(name, a.weights, work, a.dry_run)
        out = a.out / name
        cmd = [sys.executable, "-m", "pbw.reproduce", "run", *args, "--out", str(out)]
        cmd += ["--max_prompts", str(prompts), "--max_seeds", str(seeds), *extra]
        print(f"== {name}: {'; '.join(notes) or 'weights from ' + str(a.weights)}", flush=True)
        t0 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "run.log", "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - t0
        if rc != 0 or not (out / "results.json").exists():
            tail = (out / "run.log").read_text(errors="replace").strip().splitlines()[-1:]
            print(f"   failed (exit {rc}): {tail[0] if tail else ''}; the log: {out / 'run.log'}", flush=True)
            failed.append(name)
            table.append((name, "FAILED", float("nan"), seconds))
            continue
        for variant, s in seconds_per_edit(out / "results.json").items():
            table.append((name, variant, s, seconds))
    print(f"\n{'experiment':20s} {'variant':40s} {'s/edit':>8s} {'total s':>8s}")
    for name, variant, s, total in table:
        print(f"{name:20s} {variant:40s} {s:8.2f} {total:8.1f}")
    print(f"results folders: {a.out}/<experiment> (results.md, results.json, gallery/index.html, run.log)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
