"""The app's logic, free of any web framework: starting images, brush layers and their words to the
regions of an edit (and bird parts to brush layers), edits through the editing core (`Editor`), a history of `EditResult`s. `pbw.app.ui`
puts a Gradio page on top of `Painter`."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pbw.data.synthetic import PARTS
from pbw.editing.editor import Editor, EditProgress, TimeLimit
from pbw.editing.losses import PreservationLoss
from pbw.editing.masks import PART_PREFIX, load_mask
from pbw.editing.module import EditRequest, EditSettings, Region
from pbw.editing.project import PhotoError, ProjectSettings, edit_space, project
from pbw.editing.result import EditResult
from pbw.models.maskable import MaskableGenerator, resize_mask
from pbw.semantic import PromptSet, SemanticNet

MAX_SAMPLES = 16
#: the app's starting settings: Adam alone, fewer steps, candidates and crops than the paper, for speed; the
#: step size (lr None) is the generator's own (`MaskableGenerator.edit_settings`)
APP_SETTINGS = EditSettings(optimizer="adam", steps=50, generations=5, population=16, crops=8)
#: a rise of the semantic score below this says the edit did not take: chosen for the bundled tiny CLIP on seeds
#: 1000-1015 x red, blue bodies: edits at the paper's lr 0.01 (2 of 32 took) rose by 0.07 (median; 26 of 30 that
#: did not take < 0.15), edits at the generator's 0.8 (27 of 32 took) by 0.23 or more where they took
BARELY_MOVED = 0.15
REALISM_SAMPLES = 100  # unedited samples (seeds 0-99) the realism of an edit is ranked among
PHOTO_TYPES = "PNG, JPEG, BMP or WebP"
TIME_LIMIT = 300.0  # seconds after which an edit stops and shows what it reached
#: the app's projection of an uploaded photo: the projector's defaults, stopped after a minute with what it reached
APP_PROJECTION = ProjectSettings(time_limit=60.0)


class AppInputError(ValueError):
    """Input the page cannot use (no stroke, no prompt, a file that is not a latent of this generator or
    not a readable photo)."""


def brush_mask(layers: list[np.ndarray] | None, resolution: int) -> torch.Tensor | None:
    """The painted region of brush layers (RGBA arrays, any size; painted = alpha > 0) as a soft
    [1, 1, R, R] mask in [0, 1] (area-averaged to the generator's resolution), or None if nothing is painted."""
    painted = None
    for layer in layers or []:
        arr = np.asarray(layer)
        if arr.ndim != 3 or arr.shape[-1] != 4:
            raise AppInputError(f"a brush layer must be an RGBA image, got an array of shape {arr.shape}")
        a = arr[..., 3] > 0
        painted = a if painted is None else painted | a
    if painted is None or not painted.any():
        return None
    m = torch.from_numpy(painted.astype(np.float32))[None, None]
    if m.shape[-1] != m.shape[-2]:
        raise AppInputError(f"the canvas must be square like the generator's images, got {tuple(m.shape[-2:])}")
    return resize_mask(m, resolution).clamp(0, 1)


def layer_masks(layers: list[np.ndarray] | None, resolution: int) -> list[torch.Tensor | None]:
    """Each brush layer's painted region as `brush_mask` makes it (None for a layer without strokes), in
    the canvas's order (layer 1 first)."""
    return [brush_mask([layer], resolution) for layer in layers or []]


def add_layer(
    layers: list[np.ndarray] | None, mask: torch.Tensor, size: int, color: tuple[int, int, int]
) -> tuple[list[np.ndarray], int]:
    """Brush layers with `mask` ([1, 1, R, R], on where > 0.5) painted in `color`, opaque like a stroke, on
    a layer of its own: the first layer without strokes, else a new one (a transparent `size` px layer).
    Returns the layers and the number (from 1) of the layer holding the mask; `brush_mask` of that layer
    is exactly the mask's cells when R divides the canvas side."""
    out = [np.array(layer, dtype=np.uint8, copy=True) for layer in layers or []]
    empty = [k for k, layer in enumerate(out) if layer.ndim == 3 and layer.shape[-1] == 4 and not layer[..., 3].any()]
    k = empty[0] if empty else len(out)
    if k == len(out):
        out.append(np.zeros((*(out[0].shape[:2] if out else (size, size)), 4), np.uint8))
    on = F.interpolate(mask.float().cpu(), size=out[k].shape[:2], mode="nearest")[0, 0].numpy() > 0.5
    out[k][on] = (*color, 255)
    return out, k + 1


def parse_seeds(text: str) -> list[int]:
    """'0-3, 7' -> [0, 1, 2, 3, 7] (at most MAX_SAMPLES seeds)."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise AppInputError(f"seed range {part!r} runs backwards; write LOW-HIGH")
            seeds.extend(range(lo, hi + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise AppInputError(f"{part!r} is not a seed; write seeds like '0-7' or '3, 11, 42'")
    if not seeds:
        raise AppInputError("no seeds given; write seeds like '0-7' or '3, 11, 42'")
    if len(seeds) > MAX_SAMPLES:
        raise AppInputError(f"{len(seeds)} seeds asked for; at most {MAX_SAMPLES} at a time")
    return seeds


def to_pil(x: torch.Tensor, size: int | None = None) -> Image.Image:
    """[1, 3, H, W] in [-1, 1] -> PIL image (nearest-neighbour upscaled to `size`)."""
    arr = ((x[0].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    return img if size is None or size == img.width else img.resize((size, size), Image.NEAREST)


def describe(result: EditResult) -> str:
    """How the history names a result: its start (seed, loaded file) or its edit and words (several
    layers: each layer's words, joined by ' / ')."""
    if result.prompt is None:
        return result.name
    prompts = [r["prompt"] for r in result.regions] or [result.prompt]
    words = " / ".join(" | ".join(t for t, w in zip(p["texts"], p["weights"], strict=True) if w > 0) for p in prompts)
    return f"{'painted' if result.mask is not None else 'whole image'}: {words}"


class Painter:
    """Everything the page does, as plain methods over an `Editor`; one instance serves all visitors
    (requests run one at a time). Histories are lists of `EditResult`s kept by the caller (one per
    browser session); every edit is saved into its own folder of `out_dir`. `parts`: the generator
    draws the miniature's synthetic birds, so `select_part` may find bird parts with the mini world's
    part segmenter (it knows no other images)."""

    def __init__(
        self,
        generator: MaskableGenerator,
        semantic: SemanticNet,
        preservation: PreservationLoss | None = None,
        device: str | torch.device = "auto",
        settings: EditSettings = APP_SETTINGS,
        time_limit: float = TIME_LIMIT,
        out_dir: str | Path | None = None,
        projection: ProjectSettings = APP_PROJECTION,
        parts: bool = False,
        barely_moved: float = BARELY_MOVED,
    ):
        self.editor = Editor(generator, semantic, preservation, device)
        self.settings, self.time_limit, self.projection, self.parts = settings, time_limit, projection, parts
        self.barely_moved = barely_moved
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="pbw-app-"))
        self._saved: dict[str, list[str]] = {}  # an edit's name -> its downloadable files
        self._realism: np.ndarray | None = None  # the realism of unedited samples, sorted (made when first needed)

    def step_size(self, whole_image: bool = False) -> float:
        """Adam's step size the page starts from: the painter's, else the generator's own for the kind of edit."""
        return self.settings.for_generator(self.generator, masked=not whole_image).lr

    def realism_percentile(self, value: float) -> float | None:
        """The share (0..100) of the generator's unedited samples its discriminator finds less real than
        `value`, or None without a discriminator."""
        if self._realism is None:  # one sample at a time, as an edit is scored (minibatch statistics in D)
            g, dev, scores = self.generator, self.editor.device, []
            with torch.no_grad():
                for seed in range(REALISM_SAMPLES):
                    codes = {k: v.to(dev) for k, v in g.sample(1, seed=seed).items()}
                    r = g.realism(g.decode(g.encode(codes), cond=codes), codes)
                    if r is None:
                        break
                    scores.append(float(r[0]))
            self._realism = np.sort(np.array(scores))
        if not len(self._realism):
            return None
        return 100.0 * float(np.searchsorted(self._realism, value)) / len(self._realism)

    @property
    def generator(self) -> MaskableGenerator:
        return self.editor.generator

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    def samples(self, seeds_text: str, class_label: int | None = None) -> list[EditResult]:
        """Starting images from seeds (and, for class-conditional generators, a class)."""
        conditional = self.generator.is_conditional
        extra = {"classes": int(class_label)} if conditional and class_label is not None else {}
        starts = []
        for s in parse_seeds(seeds_text):
            try:
                codes = self.generator.sample(1, seed=s, **extra)
            except ValueError as e:  # e.g. a class label out of range
                raise AppInputError(str(e)) from e
            cls = f", class {int(codes['class'][0])}" if conditional else ""
            starts.append(self.editor.start(codes, f"seed {s}{cls}"))
        return starts

    def load(self, path: str | Path) -> EditResult:
        """The image saved in a latents.pt of this app or pbw-edit (any version), checked against this generator."""
        try:
            result = EditResult.load(path, self.generator)
        except ValueError as e:
            raise AppInputError(_own_name(e, path)) from e
        result.name = f"loaded {Path(path).name}"
        return result

    def project(self, path: str | Path, on_progress: Callable[[str, int, int], None] | None = None) -> EditResult:
        """A new history's start from the photo at `path` (any size and mode), projected into the generator
        with the painter's projection settings (pivotal tuning included); edits keep the photo's pixels
        outside their masks. `on_progress(phase, done, total)` follows the projection, then the tuning."""
        lpips = self.editor.preservation.lpips
        try:
            start = project(
                path,
                self.generator,
                self.projection,
                perceptual=lpips,
                device=self.editor.device,
                progress=False,
                report=on_progress,
                name=Path(path).name,
            )
        except PhotoError as e:
            raise AppInputError(f"{_own_name(e, path)}; upload a photo as {PHOTO_TYPES}") from e
        start.name = f"photo {Path(path).name}"
        return start

    def select_part(self, current: EditResult | None, part: str) -> torch.Tensor:
        """The [1, 1, R, R] mask of the bird `part` (one of `PARTS`) that the mini world's part segmenter
        finds in `current`'s image (the image the next edit starts from), as pbw-edit's ``--mask part:body``."""
        if not self.parts:
            raise AppInputError(
                "selecting a part needs the miniature's part segmenter, which knows only the "
                "synthetic birds (start the app with the bundled mini generator, or --parts true for "
                "your own generator of them); brush the region instead"
            )
        if current is None:
            raise AppInputError("pick a starting image first (sample seeds, or upload saved latents or a photo)")
        if part not in PARTS:
            raise AppInputError(f"unknown bird part {part!r}; the parts are {', '.join(PARTS)}")
        mask, _ = load_mask(PART_PREFIX + part, self.resolution, allow_empty=True, image=current.edited)
        if not mask.any():
            raise AppInputError(
                f"the part segmenter finds no {part} in this image (it knows only the miniature's "
                "synthetic birds); brush the region instead"
            )
        return mask

    def paint(
        self,
        base: EditResult | None,
        layers: list[np.ndarray] | None,
        words: list[str],
        negative: str = "",
        whole_image: bool = False,
        settings: EditSettings | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
        **changes,
    ) -> EditResult:
        """Paint the canvas's brush layers (RGBA arrays), each with its own words (`words[k]` for layer
        k + 1), in one edit: each layer with strokes is a region (layers without strokes are left out;
        where layers overlap, the later one wins, as on the canvas). One painted layer is the one-region
        edit of `edit`. `whole_image`: a new image from the first layer's words, strokes ignored."""
        if base is None:
            raise AppInputError("pick a starting image first (sample seeds, or upload saved latents)")
        if whole_image:
            return self.edit(base, None, (words or [""])[0], negative, settings, on_progress, **changes)
        masks = layer_masks(layers, self.resolution)
        painted = [k for k, m in enumerate(masks) if m is not None]
        if not painted:
            raise AppInputError("paint a stroke on the image first (or tick whole-image mode)")
        regions = []
        for k in painted:
            text = (words[k] if k < len(words) else "") or ""
            if not text.strip():
                if len(masks) == 1:
                    raise AppInputError("type the words to paint (the prompt is empty)")
                if k >= len(words):
                    raise AppInputError(
                        f"layer {k + 1} has strokes, but the page takes words for {len(words)} layers at most: "
                        f"erase layer {k + 1} or paint its part on one of layers 1-{len(words)}"
                    )
                raise AppInputError(
                    f"layer {k + 1} has strokes but no words: type them in 'words for layer {k + 1}', "
                    "or erase the layer"
                )
            regions.append((masks[k], text))
        return self.edit_regions(base, regions, negative, settings, on_progress, **changes)

    def edit(
        self,
        base: EditResult,
        mask: torch.Tensor | None,
        prompt: str,
        negative: str = "",
        settings: EditSettings | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
        **changes,
    ) -> EditResult:
        """Paint `prompt` into `mask` of `base`'s image (mask None: whole-image mode, a new image from the
        words); see `edit_regions`."""
        return self.edit_regions(base, [(mask, prompt)], negative, settings, on_progress, **changes)

    def edit_regions(
        self,
        base: EditResult,
        regions: list[tuple[torch.Tensor | None, str]],
        negative: str = "",
        settings: EditSettings | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
        **changes,
    ) -> EditResult:
        """Paint each region's words into its mask of `base`'s image in one edit (one region with mask
        None: whole-image mode), with `settings` (default: the painter's) updated by `changes`; the
        negative words apply to every region. Returns the next result of the history, saved. An edit
        stopped by the time limit returns what it reached, with a note."""
        several = len(regions) > 1
        for k, (mask, prompt) in enumerate(regions, 1):
            layer = f" of layer {k}" if several else ""
            if not (prompt or "").strip():
                raise AppInputError(f"type the words to paint (the prompt{layer} is empty)")
            if mask is not None and not bool((mask > 0).any()):
                raise AppInputError(f"the mask{layer} is empty: paint a stroke on the image first")
        try:
            prompts = [PromptSet.parse(prompt.strip(), negative.strip() or None) for _, prompt in regions]
            settings = replace(settings or self.settings, **changes)
            if settings.space is None:  # a projected photo and its edits: the space of the projection
                settings = replace(settings, space=edit_space(base, self.generator))
        except ValueError as e:
            raise AppInputError(str(e)) from e
        name = f"edit_{len(self._saved) + 1:04d}"
        if several:
            parts = [Region(p, mask) for p, (mask, _) in zip(prompts, regions, strict=True)]
            request = EditRequest(regions=parts, name=name, base=base)
        else:
            request = EditRequest(prompts[0], mask=regions[0][0], name=name, base=base)
        callbacks = [TimeLimit(self.time_limit)] if self.time_limit else []
        if on_progress is not None:
            callbacks.append(EditProgress(on_progress))
        (result,) = self.editor.run([request], settings, callbacks=callbacks, progress=False)
        files = result.save(self.out_dir / result.name)
        self._saved[result.name] = [str(files[k]) for k in ("edited", "latents", "comparison")]
        return result

    def files(self, result: EditResult) -> list[str] | None:
        """The downloadable files of an edit made here (edited PNG, latents, comparison), else None."""
        return self._saved.get(result.name)


def _own_name(error: Exception, path: str | Path) -> str:
    """An error about the upload at `path` (a server-side temporary file) naming the file by its own name,
    without the reading library's inner message."""
    text = str(error)
    if error.__cause__ is not None and str(error.__cause__) and str(error.__cause__) in text:
        text = text.replace(str(error.__cause__), "").rstrip(": ")
    return text.replace(str(path), Path(path).name).replace(str(Path(path).parent) + "/", "")


def score_report(metrics: dict[str, float], barely_moved: float = BARELY_MOVED) -> tuple[str, bool]:
    """The semantic score before and after an edit in plain words, and whether it rose by less than `barely_moved`."""
    before, after = metrics["semantic_score_start"], metrics["semantic_score"]
    rise = after - before
    fits = (
        "the painted layers fit their words** (CLIP's score, the mean over the layers"
        if "semantic_score:2" in metrics
        else "the painted region fits the words** (CLIP's score"
    )
    text = f"**How well {fits}, higher = closer): {before:.2f} before, {after:.2f} after ({rise:+.2f})."
    if rise < barely_moved:
        return (
            text + " **The score barely moved: the edit probably did not take.** Try a larger step size, "
            "more steps, or other words.",
            True,
        )
    return text, False


def format_metrics(
    metrics: dict[str, float],
    realism_percentile: float | None = None,
    lpips: bool = False,
    barely_moved: float = BARELY_MOVED,
) -> str:
    """The figures shown beside the result, in plain words; figures that are off are left out."""
    lines = [score_report(metrics, barely_moved)[0]] if "semantic_score_start" in metrics else []
    if realism_percentile is not None:
        lines.append(
            f"**Realism:** more real-looking than {realism_percentile:.0f}% of this generator's unedited samples "
            "(judged by its discriminator; 50% = a typical sample)."
        )
    if "preservation_l1" in metrics:
        change = f"mean pixel change {metrics['preservation_l1']:.3f} (0 = untouched, pixels in -1..1)"
        if lpips and "preservation_lpips" in metrics:
            change += f", perceptual (LPIPS) change {metrics['preservation_lpips']:.3f}"
        lines.append(f"**Outside the painted region:** {change}.")
    return "\n\n".join(lines)
