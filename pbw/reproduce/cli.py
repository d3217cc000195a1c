"""`pbw-reproduce`: `run` an experiment config, the `mini` alias, `bundle` the mini models, the
miniature's picture (`grid`)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from pbw.commandline import OneLineParser
from pbw.configs import resolve_config_args
from pbw.reproduce.experiment import Experiment, only_variants

FAILED_STATUS = 3  # the exit status of a run in which some requests failed
USAGE = """pbw-reproduce run --config reproduce/<experiment>.yaml [--out DIR] [overrides]
pbw-reproduce mini [--quick] [--out DIR] [options]      (= run --config reproduce/mini[_quick].yaml)
pbw-reproduce bundle LIGHTNING_CKPT CLIP_DIR [--biggan CKPT]
pbw-reproduce grid [--out docs/mini_edits.png] [--seeds 0-3] [--colors red,blue,yellow] [--blocks ...]"""


def build_run_parser() -> ArgumentParser:
    """The `run` parser: every Experiment field (from a YAML --config, each overridable, e.g.
    --generators.bedroom.path FILE, --tasks.masked_edits.seeds 2, --settings.steps 10) and the run's options."""
    p = ArgumentParser(
        prog="pbw-reproduce run",
        description="Run an experiment config (reproduce/*.yaml): edit its requests with every "
        "variant, judge them, write results.md/json, grids, gallery/index.html.",
    )
    p.add_argument("--config", action=ActionConfigFile, help="the experiment's YAML")
    p.add_class_arguments(Experiment)
    p.add_argument("--out", type=str | None, default=None, help="output folder (default out/reproduce/<name>)")
    p.add_argument("--wandb", type=bool, default=False, help="log a W&B run with a table per task")
    p.add_argument(
        "--wandb_project", type=str | None, default=None, help="W&B project (implies --wandb; default pbw-reproduce)"
    )
    p.add_argument(
        "--max_prompts", type=int | None, default=None, help="at most this many prompts per task (smoke runs)"
    )
    p.add_argument(
        "--max_seeds",
        type=int | None,
        default=None,
        help="at most this many seeds per task with pairing product (smoke runs)",
    )
    p.add_argument("--progress", type=bool, default=False, help="show the edits' progress bars")
    p.add_argument(
        "--restart",
        type=bool,
        default=False,
        help="start over: delete the requests and results saved in --out (a rerun without it resumes)",
    )
    p.add_argument(
        "--fail_fast",
        type=bool,
        default=False,
        help="stop at the first request that fails (default: record it, go on, exit with status 3)",
    )
    p.add_argument(
        "--variants",
        type=str | None,
        default=None,
        help="run only the rows whose names contain one of these '|'-separated words, e.g. 'paper|BigGAN'",
    )
    return p


def parse_run(argv: list[str]) -> tuple[Experiment, object]:
    """The Experiment and the run's options from `run` arguments."""
    p = build_run_parser()
    cfg = p.parse_args(argv)
    init = p.instantiate(cfg)
    exp = Experiment(**{f.name: init[f.name] for f in fields(Experiment)})
    if cfg.variants:
        exp = only_variants(exp, cfg.variants.split("|"))
    return exp, cfg


def load_experiment(config: str | Path, overrides: list[str] = ()) -> Experiment:
    """An experiment config file (with command-line style overrides) as an Experiment."""
    return parse_run(["--config", str(config), *overrides])[0]


def run_main(argv: list[str]) -> dict:
    from pbw.reproduce.report import results_markdown
    from pbw.reproduce.runner import run_experiment

    exp, cfg = parse_run(argv)
    out = cfg.out or f"out/reproduce/{exp.name}"
    project = cfg.wandb_project or ("pbw-reproduce" if cfg.wandb else None)
    results = run_experiment(
        exp,
        out,
        wandb_project=project,
        progress=cfg.progress,
        max_prompts=cfg.max_prompts,
        max_seeds=cfg.max_seeds,
        keep_going=not cfg.fail_fast,
        restart=cfg.restart,
    )
    print(results_markdown(results))
    print(f"wrote {out}/results.md, results.json, gallery/index.html")
    if results["failed"]:
        print(f"{results['failed']} request(s) failed: listed in {out}/results.md", file=sys.stderr)
        raise SystemExit(FAILED_STATUS)
    return results


def mini_parser() -> argparse.ArgumentParser:
    from pbw.reproduce import mini

    p = argparse.ArgumentParser(
        prog="pbw-reproduce mini",
        description=mini.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a handful of short edits (reproduce/mini_quick.yaml)")
    p.add_argument("--out", default="out/reproduce_mini")
    p.add_argument("--data", default=None, help="synthetic birds root (made in OUT/real_birds when absent)")
    p.add_argument("--generator", default=None, help="StyleGAN2 checkpoint (default: the bundled one)")
    p.add_argument("--biggan", default=None, help="BigGAN checkpoint (default: the bundled one, if any)")
    p.add_argument("--clip", default=None, help="CLIP spec (default: the bundled local-dir one)")
    for name in ("seeds", "colors", "captions", "steps", "generations", "population"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"override the config's {name}")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam's peak learning rate, every row of both tasks (default: each generator's own: "
        "StyleGAN2 0.8 for masked edits, BigGAN 0.4, both 0.05 for text to image)",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=None,
        help="the first sample seed (masked edits; text to image starts 1000 later; default 1000, "
        "others give held-out seeds)",
    )
    p.add_argument("--restart", action="store_true", help="start over instead of resuming the run in --out")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first request that fails")
    p.add_argument(
        "--first-caption",
        type=int,
        default=None,
        help="skip this many held-out test birds before taking the captions (default 0)",
    )
    return p


def grid_parser() -> argparse.ArgumentParser:
    from pbw.reproduce import grid

    p = OneLineParser(
        prog="pbw-reproduce grid",
        description=grid.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="docs/mini_edits.png", help="the PNG to write")
    p.add_argument("--seeds", default="0-3", help="sample seeds, one row each: 0-3, 0,2,5 or 0-3,7")
    p.add_argument("--colors", default="red,blue,yellow", help="body colors, one column each")
    p.add_argument(
        "--blocks",
        default="stylegan2,biggan",
        help="which blocks, in order: stylegan2, biggan (one-region edits), regions (two-region edits)",
    )
    p.add_argument(
        "--pairs", default="red/yellow,blue/white", help="the regions block's body/wings colors, one column each"
    )
    for name in ("steps", "generations", "population"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"override the edit config's {name} (smoke runs)")
    return p


def grid_main(argv: list[str]) -> None:
    from pbw.reproduce.grid import edit_grid, parse_colors, parse_seeds

    a = grid_parser().parse_args(argv)
    overrides = {
        k: v
        for k, v in (("steps", a.steps), ("generations", a.generations), ("population", a.population))
        if v is not None
    }
    blocks = tuple(b.strip() for b in a.blocks.split(","))
    edit_grid(
        a.out, parse_seeds(a.seeds), parse_colors(a.colors), blocks=blocks, pairs=parse_colors(a.pairs), **overrides
    )


def _input_errors() -> tuple[type, ...]:
    from pbw.editing.masks import MaskError
    from pbw.editing.resume import ConfigChangedError
    from pbw.evaluation.judges import SameEvaluatorError
    from pbw.reproduce.experiment import ExperimentError
    from pbw.reproduce.grid import GridError
    from pbw.semantic import MissingWeightsError

    return (
        ExperimentError,
        SameEvaluatorError,
        MaskError,
        MissingWeightsError,
        FileNotFoundError,
        GridError,
        ConfigChangedError,
    )


def main(argv: list[str] | None = None) -> None:
    """The command line. A mistake in the input (a config error, a missing file, an evaluator that is the
    optimizing CLIP, a rerun into a folder of another configuration) is one line on stderr and exit
    status 2 (PBW_DEBUG=1 shows the traceback); a run in which some requests failed exits with status 3."""
    try:
        _main(argv)
    except _input_errors() as e:
        if os.environ.get("PBW_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def bundle_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="pbw-reproduce bundle",
        description="write pbw/assets/mini from a trained StyleGAN2, CLIP folder (and BigGAN)",
    )
    p.add_argument("generator_ckpt")
    p.add_argument("clip_dir")
    p.add_argument("--biggan", default=None, help="a trained mini BigGAN checkpoint to bundle too")
    return p


def _main(argv: list[str] | None = None) -> None:
    argv = resolve_config_args(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "run":
        run_main(rest)
    elif command == "mini":
        from pbw.reproduce.mini import mini_config, mini_overrides

        a = vars(mini_parser().parse_args(rest))
        out, quick = a.pop("out"), a.pop("quick")
        run_main(["--config", str(mini_config(quick)), "--out", str(out), *mini_overrides(**a)])
    elif command == "grid":
        grid_main(rest)
    elif command == "bundle":
        from pbw.assets import bundle_mini

        a = bundle_parser().parse_args(rest)
        for name, size in bundle_mini(a.generator_ckpt, a.clip_dir, biggan_ckpt=a.biggan).items():
            print(f"{name}: {size / 2**20:.2f} MiB")
    else:
        raise SystemExit(f"unknown command {command!r}\n{USAGE}")
