"""An experiment, as a config: generators, the CLIP it optimizes with, evaluators, real images, the base
`EditSettings`, and tasks (a prompt set, masks, seeds, variants, judges).

Read from YAML by `load_experiment` (jsonargparse; every field can be overridden on the command line,
e.g. `--generators.bedroom.path FILE`, `--tasks.masked_edits.seeds 2`, `--settings.steps 10`), and
checked by `validate` before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from pbw.editing import EditSettings

JUDGES = {
    "fid": "FID/KID of the edited images against the experiment's real images (torchmetrics)",
    "preservation": "L1, PSNR (and LPIPS when configured) outside the mask (masked tasks)",
    "change": "mean |pixel change| inside and outside the mask (masked tasks)",
    "evaluator": "score and top-1 accuracy by each evaluator CLIP (one the optimization never saw)",
    "color_oracle": "the miniature's pixel oracle for masked color edits (template value `color`)",
    "caption_oracle": "the miniature's pixel oracle for text to image from synthetic-bird captions",
    "part_oracle": "the miniature's pixel oracle for edits of several regions: each region's part color",
}
MASKED_ONLY = {"preservation", "change", "color_oracle"}


@dataclass
class GeneratorSpec:
    """A generator: `path` is any checkpoint `pbw.checkpoints.load_generator` reads, or `bundled:stylegan2`
    / `bundled:biggan` (the miniature's). `overrides`: constructor arguments for every variant (e.g.
    `truncation_psi`). `optional`: a missing file leaves its variants out (noted) instead of failing.
    `class_names`: a file with one class name per line (Places365's categories_places365.txt), so that
    tasks can name classes (`classes: [bedroom]`). `discriminator`: a separate discriminator file
    (BigGAN-PyTorch's D.pth) for the realism score."""

    path: str
    overrides: dict[str, Any] = field(default_factory=dict)
    optional: bool = False
    class_names: str | None = None
    discriminator: str | None = None


@dataclass
class Prompts:
    """A task's prompts; give exactly one source.

    - `texts`: literal prompts (`"a red head::2 | a crown"` syntax).
    - `template` + `values`: `"a bird with a {color} body"` filled with every combination of `values`
      (in order); each request remembers its values (the oracle reads `color`).
    - `file`: a YAML/JSON prompt set, either `{category: [prompts]}` or a list of
      `{text, category, region, negative}` (region: what the mask covers), or a .txt file with one
      prompt a line (`#` comments).
    - `captions`: a caption source: a CUB-200-2011 folder with Reed et al.'s `text_c10` next to it
      (images of `split`), a `text_c10`-style folder of `<class>/<image>.txt`, a text file of one
      caption a line, or `synthetic_birds` (the synthetic birds of the experiment's real images, split
      `split`). `caption_index`: which of an image's captions (Reed et al. give ten).
    `categories` / `regions` keep only the prompts of those; `first`/`count` then slice the list (after
    the shuffle with `shuffle_seed`, if any); `negative` is added to every prompt."""

    texts: list[str] | None = None
    template: str | None = None
    values: dict[str, list[str]] | None = None
    file: str | None = None
    captions: str | None = None
    split: str = "test"
    caption_index: int = 0
    shuffle_seed: int | None = None
    first: int = 0
    count: int | None = None
    categories: list[str] | None = None
    regions: list[str] | None = None
    negative: str | None = None


@dataclass
class Masks:
    """Where each masked edit acts (white = edit). For a request whose prompt names a `region`, the first
    that applies: `files` (a path pattern with `{seed}`, `{region}`, `{class}`, `{index}`, e.g.
    `masks/{seed}_{region}.png`: masks the user drew or made; a missing file falls through), then a
    `segmenter` (a callable `module:function`, called as `function(image, region, **segmenter_args)`
    with the start image [3, R, R] in [-1, 1], returning a [R, R] mask in [0, 1], or None when the
    region is not in the image: that request is left out, noted), then `part` (bird parts, "body" or
    "body+wing", that the mini world's part segmenter finds in the start image, as pbw-edit's
    `--mask part:body`; none found: the request is left out, noted), then `boxes[region]` (a rectangle
    "x0,y0,x1,y1", pixels or 0..1 fractions), then `box` (every request). `feather` softens edges (px)."""

    box: str | None = None
    boxes: dict[str, str] | None = None
    files: str | None = None
    segmenter: str | None = None
    segmenter_args: dict[str, Any] = field(default_factory=dict)
    part: str | None = None
    feather: float = 0.0


@dataclass
class RegionSpec:
    """One region of a task whose requests have several: its words, a template filled with the request's
    template values (e.g. "a bird with a {body} body"), and its `masks` (e.g. {part: body}). `color`: the
    template value that names the region's asked color (what the judge part_oracle reads where the
    part segmenter finds the part `masks.part`)."""

    prompt: str
    masks: Masks
    color: str | None = None


@dataclass
class Variant:
    """One row of a task: the method or an ablation. `settings` override the experiment's EditSettings,
    `generator_overrides` the generator's constructor (e.g. `masked_demodulation: frozen`),
    `generator` another of the experiment's generators (its own samples of the same seeds), `masks`
    the row's own masks instead of the task's (a mask ablation; the rows of a generator keep the same
    requests, so a request that any of their masks leaves out is left out of all). `edit: false` is a
    reference row: the unedited start images, judged alike. `regions` (tasks with regions): `joint`, one
    edit of all the regions together; `sequential`, one one-region edit after another, each from the
    last one's result; `merged`, one edit with the task's prompt (naming every region) in the union of
    the regions' masks."""

    name: str
    regions: Literal["joint", "sequential", "merged"] = "joint"
    generator: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    generator_overrides: dict[str, Any] = field(default_factory=dict)
    masks: Masks | None = None
    edit: bool = True


@dataclass
class Task:
    """A set of requests and the variants run on it. Requests: `pairing: product` = every seed x class x
    prompt (seed-major); `zip` = prompt i with seed `first_seed + i` (text to image from captions).
    Seeds are `first_seed`..`first_seed + seeds - 1` (`seeds` None: 1 for product, one per prompt for
    zip). `classes` (class-conditional generators): labels or names (see `GeneratorSpec.class_names`);
    None: the generator draws one from the seed. No `masks`: whole-image edits (text to image).
    `settings`: the task's overrides of the experiment's EditSettings (a variant's own override both).
    `preferences`: pairs [A, B] of variant names compared request by request (None: the first
    variant against every other edited variant on the same generator). A tie is a score difference
    within `tie_tolerance`. `regions`: the requests have several regions, each with its own words and
    masks (the prompts' template values fill their words; `masks` is then not given); the task's prompt
    is the one naming them all (the `merged` rows')."""

    generator: str
    prompts: Prompts
    variants: list[Variant]
    title: str = ""
    masks: Masks | None = None
    regions: list[RegionSpec] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    first_seed: int = 0
    seeds: int | None = None
    classes: list[int | str] | None = None
    pairing: Literal["product", "zip"] = "product"
    judges: list[str] = field(default_factory=lambda: ["fid", "preservation", "evaluator"])
    preferences: list[list[str]] | None = None
    tie_tolerance: float = 0.0


@dataclass
class RealImages:
    """Real images of the domain, for FID/KID: `kind: folder` (every image under `path`, the first
    `limit`) or `synthetic_birds` (the synthetic birds at `path`, split `split`; drawn into
    OUT/real_birds when `path` is None or missing). `features`: `inception` (torchmetrics' Inception,
    comparable with published numbers; downloads its weights once), `random`
    (`pbw.metrics.RandomConvFeatures`, no download) or `yardstick` (the synthetic birds' bundled
    `pbw.evaluation.yardstick.YardstickFeatures`, trained to tell species and part colors)."""

    path: str | None = None
    kind: Literal["folder", "synthetic_birds"] = "folder"
    split: str = "train"
    limit: int = 5000
    features: Literal["inception", "random", "yardstick"] = "inception"
    kid_subset_size: int = 1000


@dataclass
class Experiment:
    """See the module's docstring and reproduce/*.yaml."""

    name: str
    generators: dict[str, GeneratorSpec]
    tasks: dict[str, Task]
    title: str = ""
    description: str = ""
    clip: str = "ViT-B-32:openai"
    clip_cache_dir: str | None = None
    view: str = "paste_onto_blank"
    evaluators: list[str] = field(default_factory=list)
    allow_same_evaluator: bool = False
    real: RealImages | None = None
    settings: EditSettings = field(default_factory=EditSettings)
    lpips: bool = False
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    device: str = "auto"


class ExperimentError(ValueError):
    """A config that cannot run (said before any model is loaded)."""


def only_variants(exp: Experiment, words: list[str]) -> Experiment:
    """The experiment with only the variants whose names contain one of `words` (a task left with
    none is dropped): to run or rerun some rows."""
    tasks = {}
    for name, task in exp.tasks.items():
        kept = [v for v in task.variants if any(w in v.name for w in words)]
        if kept:
            tasks[name] = replace(task, variants=kept)
    if not tasks:
        names = [v.name for task in exp.tasks.values() for v in task.variants]
        raise ExperimentError(f"no variant's name contains any of {words}; the variants are {names}")
    return replace(exp, tasks=tasks)


def mask_problems(m: Masks, where: str) -> list[str]:
    """What makes masks `m` unusable (said at `where`)."""
    from pbw.evaluation.segmenter import parse_parts

    problems = []
    if not any([m.box, m.boxes, m.files, m.segmenter, m.part]):
        problems.append(f"{where}: masks need a box, boxes, files, a segmenter or a part (or no masks: whole image)")
    if m.segmenter is not None and ":" not in m.segmenter:
        problems.append(f"{where}: segmenter must be 'module:function', got {m.segmenter!r}")
    if m.part is not None:
        try:
            parse_parts(m.part)
        except ValueError as e:
            problems.append(f"{where}: masks part: {e}")
        unused = [n for n in ("segmenter", "boxes", "box") if getattr(m, n)]
        if unused:
            problems.append(
                f"{where}: masks part combines with files only, not {unused}: a part (like a "
                "segmenter) decides the mask of every request the files leave"
            )
    return problems


def validate(exp: Experiment) -> None:
    """Check names, judges, settings overrides and sources; raise `ExperimentError` listing every problem."""
    from pbw.semantic.clip import VIEWS

    problems = []
    setting_names = {f.name for f in fields(EditSettings)}

    def unknown_settings(settings: dict, where: str) -> list[str]:
        unknown = sorted(set(settings) - setting_names)
        return [f"{where}: unknown settings {unknown}; EditSettings has {sorted(setting_names)}"] if unknown else []

    if not exp.tasks:
        problems.append("no tasks")
    if exp.view not in VIEWS:
        problems.append(f"view must be one of {VIEWS}, got {exp.view!r}")
    for key, task in exp.tasks.items():
        where = f"task {key!r}"
        if task.generator not in exp.generators:
            problems.append(f"{where}: generator {task.generator!r} is not one of generators {sorted(exp.generators)}")
        p = task.prompts
        sources = [n for n in ("texts", "template", "file", "captions") if getattr(p, n) is not None]
        if len(sources) != 1:
            problems.append(
                f"{where}: prompts need exactly one of texts, template (+ values), file, captions; "
                f"got {sources or 'none'}"
            )
        if p.template is not None and not p.values:
            problems.append(f"{where}: a prompt template needs values, e.g. values: {{color: [red, blue]}}")
        if task.masks is not None:
            problems += mask_problems(task.masks, where)
        if task.regions is not None:
            if task.masks is not None or p.template is None:
                problems.append(f"{where}: a task with regions takes a prompt template and no task masks")
            for i, r in enumerate(task.regions):
                problems += mask_problems(r.masks, f"{where}, region {i + 1}")
            if "part_oracle" in task.judges and any(r.color is None or r.masks.part is None for r in task.regions):
                problems.append(f"{where}: judge part_oracle needs every region's color value and masks.part")
        elif "part_oracle" in task.judges or any(v.regions != "joint" for v in task.variants):
            problems.append(f"{where}: judge part_oracle and rows' regions (sequential, merged) need task regions")
        bad_judges = sorted(set(task.judges) - set(JUDGES))
        if bad_judges:
            problems.append(f"{where}: unknown judges {bad_judges}; known: {sorted(JUDGES)}")
        if task.masks is None and task.regions is None and set(task.judges) & MASKED_ONLY - {"preservation"}:
            problems.append(f"{where}: judges {sorted(set(task.judges) & MASKED_ONLY - {'preservation'})} need masks")
        if "evaluator" in task.judges and not exp.evaluators:
            problems.append(f"{where}: judge evaluator needs evaluators: [an open_clip spec other than clip]")
        if not task.variants:
            problems.append(f"{where}: no variants")
        problems += unknown_settings(task.settings, where)
        names = [v.name for v in task.variants]
        if len(set(names)) != len(names):
            problems.append(f"{where}: variant names repeat: {names}")
        for v in task.variants:
            if v.generator is not None and v.generator not in exp.generators:
                problems.append(
                    f"{where}, variant {v.name!r}: generator {v.generator!r} is not one of {sorted(exp.generators)}"
                )
            if v.masks is not None:
                problems += mask_problems(v.masks, f"{where}, variant {v.name!r}")
                if task.masks is None:
                    problems.append(
                        f"{where}, variant {v.name!r}: masks of a row need a masked task (give the task masks too)"
                    )
            problems += unknown_settings(v.settings, f"{where}, variant {v.name!r}")
        for pair in task.preferences or []:
            if len(pair) != 2 or not set(pair) <= set(names):
                problems.append(f"{where}: preference {pair} must name two of the variants {names}")
        if task.pairing == "zip" and task.classes and len(task.classes) > 1:
            problems.append(f"{where}: pairing zip takes at most one class")
    if problems:
        raise ExperimentError("the experiment config cannot run:\n  - " + "\n  - ".join(problems))
