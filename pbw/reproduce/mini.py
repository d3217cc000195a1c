"""The paper's experiments in miniature, offline: reproduce/mini.yaml (full) and mini_quick.yaml
(CI's quick run) of the experiment runner. `pbw-reproduce mini [--quick] [options]` is an
alias of `pbw-reproduce run --config reproduce/mini[_quick].yaml` that keeps the
options it had before the runner existed; each maps onto a config field (`mini_overrides`).

With the bundled mini StyleGAN2, mini BigGAN and tiny CLIP (`pbw.assets`) on the synthetic birds,
whose pixels carry a ground truth (`pbw.evaluation.oracle`), the configs run

- masked part-color edits ("a bird with a <color> body") over seeds x colors in the body that the
  mini part segmenter (`pbw.evaluation.segmenter`) finds in each seed's start image, with the paper's
  method (CMA-ES then Adam in one broadcast w, latent masked) and its variants on the StyleGAN2: W+
  instead of w, the official code's frozen demodulation, masking only CLIP's image (`mask_mode:
  image`), Adam alone, a fixed central box instead of the body (`MASK_BOX`); the unedited originals as
  a reference row; the paper's method on the BigGAN (the body in its own images);
- text-to-image from held-out captions (no mask), StyleGAN2 in z (the paper's), w and W+, BigGAN in
  z + class vector;

judged by the CLIP score, the discriminator's realism, FID/KID against real synthetic birds on the
yardstick's features (`pbw.evaluation.yardstick`, bundled), the pixel change inside and outside the
mask, and the two pixel ORACLE accuracies (`pbw.evaluation.judges.color_oracle`, `caption_oracle`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pbw.configs import config_path
from pbw.evaluation.oracle import CENTRAL_BOX as MASK_BOX  # noqa: F401  (the box ablation's mask)

COLORS = ("red", "blue", "green", "yellow", "purple", "white", "orange", "black")
PAPER = "paper: cma+adam, w, latent mask"
REFERENCE = "reference: unedited originals"
BIGGAN_ROW = "BigGAN: cma+adam, w (block-0 features), latent mask"
BOX_ROW = "ablation: central box mask"
VARIANTS = (
    PAPER,
    "space: W+ (one w per layer)",
    "demodulation: frozen s(w0) (official code)",
    "ablation: mask only CLIP's image",
    "ablation: adam only",
    BOX_ROW,
)
TEXT_TO_IMAGE = (
    "StyleGAN2: z (paper)",
    "StyleGAN2: z, adam only",
    "StyleGAN2: w",
    "StyleGAN2: W+",
    "BigGAN: z + class vector (paper)",
)
MASKED_TASK, T2I_TASK = "masked_edits", "text_to_image"
# The masked-edit rows' oracle and change columns.
TABLE_COLUMNS = (
    "n",
    "oracle_accuracy",
    "region_accuracy",
    "change_inside",
    "change_outside",
    "semantic_score",
    "realism",
    "fid",
    "kid",
    "seconds",
)


def mini_config(quick: bool = False) -> Path:
    """The shipped reproduce/mini_quick.yaml or reproduce/mini.yaml."""
    return config_path("reproduce/mini_quick.yaml" if quick else "reproduce/mini.yaml")


def mini_overrides(
    data=None,
    generator=None,
    biggan=None,
    clip=None,
    seeds=None,
    colors=None,
    captions=None,
    steps=None,
    generations=None,
    population=None,
    lr=None,
    first_seed=None,
    first_caption=None,
    restart=False,
    fail_fast=False,
) -> list[str]:
    """The runner's command-line overrides for the options `mini` had before the runner."""
    args: list[str] = []
    if data is not None:
        args += ["--real.path", str(data)]
    if generator is not None:
        args += ["--generators.stylegan2.path", str(generator)]
    if biggan is not None:
        args += ["--generators.biggan.path", str(biggan), "--generators.biggan.optional", "false"]
    if clip is not None:
        args += ["--clip", clip]
    if seeds is not None:
        args += [f"--tasks.{MASKED_TASK}.seeds", str(seeds)]
    if colors is not None:
        args += [f"--tasks.{MASKED_TASK}.prompts.values", json.dumps({"color": list(COLORS[:colors])})]
    if captions is not None:
        args += [f"--tasks.{T2I_TASK}.prompts.count", str(captions)]
    if first_caption is not None:
        args += [f"--tasks.{T2I_TASK}.prompts.first", str(first_caption)]
    if first_seed is not None:  # text to image starts 1000 seeds later
        args += [
            f"--tasks.{MASKED_TASK}.first_seed",
            str(first_seed),
            f"--tasks.{T2I_TASK}.first_seed",
            str(first_seed + 1000),
        ]
    for name, value in (("steps", steps), ("generations", generations), ("population", population), ("lr", lr)):
        if value is not None:
            args += [f"--settings.{name}", str(value)]
    if lr is not None:  # and the text-to-image task's own settings
        args += [f"--tasks.{T2I_TASK}.settings", json.dumps({"lr": lr})]
    if restart:
        args += ["--restart", "true"]
    if fail_fast:
        args += ["--fail_fast", "true"]
    return args
