"""Reproduce the paper: one experiment runner, experiments as configs (reproduce/*.yaml).

``pbw-reproduce run --config reproduce/<experiment>.yaml [--out DIR] [overrides]``
runs an `Experiment` (`experiment.py`: generators, the optimizing CLIP, evaluator CLIPs, real images,
the base EditSettings and tasks: prompt set, masks, seeds, variants, judges) through the editing core
(`runner.py`), judges it with `pbw.evaluation`, and writes results.md/json, grids, an HTML gallery and
W&B tables when asked (`report.py`). The miniature is configs of the same runner (mini.yaml,
mini_quick.yaml; ``pbw-reproduce mini [--quick]`` is its alias, `mini.py`).
``pbw-reproduce bundle LIGHTNING_CKPT CLIP_DIR`` re-bundles trained models into pbw/assets/mini.
"""

from pbw.reproduce.cli import load_experiment, main
from pbw.reproduce.experiment import (
    JUDGES,
    Experiment,
    ExperimentError,
    GeneratorSpec,
    Masks,
    Prompts,
    RealImages,
    Task,
    Variant,
    validate,
)
from pbw.reproduce.mini import BIGGAN_ROW, BOX_ROW, PAPER, TABLE_COLUMNS, TEXT_TO_IMAGE, VARIANTS
from pbw.reproduce.report import results_markdown
from pbw.reproduce.runner import run_experiment

__all__ = [
    "BIGGAN_ROW",
    "BOX_ROW",
    "JUDGES",
    "PAPER",
    "TABLE_COLUMNS",
    "TEXT_TO_IMAGE",
    "VARIANTS",
    "Experiment",
    "ExperimentError",
    "GeneratorSpec",
    "Masks",
    "Prompts",
    "RealImages",
    "Task",
    "Variant",
    "load_experiment",
    "main",
    "results_markdown",
    "run_experiment",
    "validate",
]
