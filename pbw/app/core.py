"""The app's logic, free of any web framework: starting images, brush layers to masks, edits with
history, saved latents. `pbw.app.ui` puts a Gradio page on top of `Painter`."""
from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pbw.editing.cli import write_outputs
from pbw.editing.losses import PreservationLoss
from pbw.editing.module import EditModule, EditRequest, EditSettings, run_edit
from pbw.models.maskable import Codes, MaskableGenerator, resize_mask
from pbw.semantic import PromptSet, SemanticNet

MAX_SAMPLES = 16


class AppInputError(ValueError):
    """Input the page cannot use (no stroke, no prompt, a file that is not a latent of this generator)."""


class EditTimeout(RuntimeError):
    """An edit ran past the app's time limit."""


@dataclass
class Step:
    """One image in the history: base codes and latent, the masked layers painted over it, the pixels.

    `layers` are (edit latent w, mask [1, 1, R, R]) in painting order; the image is the base latent
    `w0` decoded with each layer composited over the previous result (see `Canvas`).
    """

    codes: Codes
    w0: torch.Tensor
    image: torch.Tensor  # [1, 3, R, R] in [-1, 1], on the CPU
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    label: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


class Canvas(MaskableGenerator):
    """A generator seen through the current history: `encode` gives the history's base latent, and a
    masked `decode` pastes the newly edited region (at pixel level, through the mask) over the image
    painted so far, so a successive edit changes only its own stroke and keeps earlier edits."""

    def __init__(self, base: MaskableGenerator, w0: torch.Tensor, previous: torch.Tensor | None = None):
        super().__init__()
        self.base = base
        self.discriminator = base.discriminator
        self.register_buffer("w_start", w0.detach().clone())
        self.register_buffer("previous", None if previous is None else previous.detach().clone())

    @property
    def resolution(self) -> int:
        return self.base.resolution

    def sample(self, n: int, seed: int | None = None, **kwargs: Any) -> Codes:
        return self.base.sample(n, seed, **kwargs)

    def encode(self, codes: Codes) -> torch.Tensor:
        n = next(iter(codes.values())).shape[0]
        return self.w_start.expand(n, *self.w_start.shape[1:])

    def decode(self, w: torch.Tensor, w0: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               cond: Codes | None = None) -> torch.Tensor:
        x = self.base.decode(w, w0, mask, cond=cond)
        if mask is None or self.previous is None:
            return x
        m = resize_mask(mask.to(x.dtype), x.shape[-1])
        return x * m + self.previous.to(x.dtype) * (1 - m)


class _AppEditModule(EditModule):
    """EditModule with the app's time limit and a per-step progress report."""

    def __init__(self, *args, deadline: float | None = None, on_step: Callable[[int, int], None] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline, self.on_step = deadline, on_step

    def objective(self, *args, **kwargs):
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise EditTimeout("the edit ran past the app's time limit; use fewer steps or CMA-ES generations, "
                              "or start the app with a larger --time_limit")
        return super().objective(*args, **kwargs)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.on_step is not None:
            self.on_step(batch_idx + 1, self.settings.steps)


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


class Painter:
    """Everything the page does, as plain methods; one instance serves all visitors (requests run
    one at a time). Histories are lists of `Step`s kept by the caller (one per browser session)."""

    def __init__(self, generator: MaskableGenerator, semantic: SemanticNet,
                 preservation: PreservationLoss | None = None,
                 device: str | torch.device = "cpu", population: int = 16, time_limit: float = 300.0,
                 out_dir: str | Path | None = None):
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.semantic = semantic.to(self.device).eval()
        self.preservation = (preservation or PreservationLoss(lpips=False)).to(self.device)
        self.population, self.time_limit = population, time_limit
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="pbw-app-"))
        probe = self.generator.sample(1, seed=0)
        # the forms each code may take: as sampled, and as whole-image editing optimizes it (a class vector)
        self.code_forms = {k: {tuple(v.shape[1:]): v.dtype} for k, v in probe.items()}
        for k, v in self.generator.continuous_codes(probe).items():
            self.code_forms[k][tuple(v.shape[1:])] = v.dtype
        with torch.no_grad():
            self.w_shape = tuple(self.generator.encode(probe).shape[1:])
        self.conditional = "class" in probe
        self._count = 0

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    # ---- starting images -------------------------------------------------------------------
    def _decode(self, w: torch.Tensor, codes: Codes) -> torch.Tensor:
        return self.generator.decode(w, cond=codes)

    @torch.no_grad()
    def start(self, codes: Codes, label: str) -> Step:
        """A history's first step: the image of `codes`."""
        codes = {k: v.to(self.device) for k, v in codes.items()}
        w0 = self.generator.encode(codes)
        return Step({k: v.cpu() for k, v in codes.items()}, w0.cpu(), self._decode(w0, codes).cpu(), label=label)

    def samples(self, seeds_text: str, class_label: int | None = None) -> list[Step]:
        """Starting images from seeds (and, for class-conditional generators, a class)."""
        seeds = parse_seeds(seeds_text)
        extra = {}
        if self.conditional and class_label is not None:
            extra["classes"] = int(class_label)
        steps = []
        for s in seeds:
            try:
                codes = self.generator.sample(1, seed=s, **extra)
            except ValueError as e:  # e.g. a class label out of range
                raise AppInputError(str(e)) from e
            cls = f", class {int(codes['class'][0])}" if "class" in codes else ""
            steps.append(self.start(codes, f"seed {s}{cls}"))
        return steps

    @torch.no_grad()
    def load_latents(self, path: str | Path) -> Step:
        """The image saved in a latents.pt written by this app or by edit.py, checked against this generator."""
        name = Path(path).name
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise AppInputError(f"{name} is not a saved latent file (latents.pt from pbw's app or edit.py): {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("codes"), dict) or "w0" not in data:
            raise AppInputError(f"{name} is not a saved latent file: it needs 'codes' and 'w0' "
                                f"(as in latents.pt from pbw's app or edit.py)")
        codes = data["codes"]
        want = {k: " or ".join(map(str, forms)) for k, forms in self.code_forms.items()}
        got = {k: tuple(v.shape[1:]) if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == 1 else None
               for k, v in codes.items()}
        w0 = data["w0"]
        fits = got.keys() == want.keys() and all(got[k] in self.code_forms[k] for k in got)
        if not fits or not torch.is_tensor(w0) or tuple(w0.shape) != (1, *self.w_shape):
            w_got = tuple(w0.shape) if torch.is_tensor(w0) else type(w0).__name__
            raise AppInputError(f"{name} is not a latent of this generator: it has codes {got} and w0 {w_got}, "
                                f"this generator needs codes {want} (batch of 1) and w0 {(1, *self.w_shape)}")
        codes = {k: v.to(self.code_forms[k][got[k]]) for k, v in codes.items()}
        layers = data.get("layers")
        if layers is None:  # edit.py's single edit: a whole-image result or one masked layer
            lat, mask = data.get("latents", {}), data.get("mask")
            if "w" in lat and mask is not None and bool((mask < 1).any()):
                layers = [(lat["w"], mask)]
            else:
                codes = {**codes, **{k: v for k, v in lat.items() if k != "w"}}
                w0 = lat["w"] if "w" in lat else self.generator.encode({k: v.to(self.device) for k, v in codes.items()})
                layers = []
        for w, mask in layers:
            if tuple(w.shape) != (1, *self.w_shape) or mask.ndim != 4 or mask.shape[:2] != (1, 1):
                raise AppInputError(f"{name}: a painted layer does not fit this generator (latent {tuple(w.shape)}, "
                                    f"mask {tuple(mask.shape)})")
        return self._replay(codes, w0.float(), [(w.float(), m.float()) for w, m in layers], f"loaded {name}")

    def _replay(self, codes: Codes, w0: torch.Tensor, layers: list, label: str) -> Step:
        step = Step(codes, w0.cpu(), self._decode(w0.to(self.device), self._dev(codes)).cpu(), label=label)
        for w, mask in layers:
            canvas = self._canvas(step)
            x = canvas.decode(w.to(self.device), canvas.w_start, mask.to(self.device), cond=self._dev(codes))
            step = Step(codes, step.w0, x.cpu(), step.layers + [(w.cpu(), mask.cpu())], label=label)
        return step

    def _dev(self, codes: Codes) -> Codes:
        return {k: v.to(self.device) for k, v in codes.items()}

    def _canvas(self, step: Step) -> Canvas:
        return Canvas(self.generator, step.w0.to(self.device),
                      step.image.to(self.device) if step.layers else None).to(self.device)

    # ---- editing ----------------------------------------------------------------------------
    def edit(self, step: Step, mask: torch.Tensor | None, prompt: str, negative: str = "", optimizer: str = "adam",
             steps: int = 20, lam: float = 5.0, generations: int = 5, seed: int = 0,
             on_step: Callable[[int, int], None] | None = None) -> Step:
        """Paint `prompt` into `mask` of `step`'s image (mask None: whole-image mode, a new image from the
        caption). Returns the next step of the history, with metrics and downloadable files."""
        if not (prompt or "").strip():
            raise AppInputError("type the words to paint (the prompt is empty)")
        prompts = PromptSet.parse(prompt.strip(), negative.strip() or None)
        settings = EditSettings(optimizer=optimizer, steps=int(steps), lam=float(lam), generations=int(generations),
                                population=self.population, seed=int(seed))
        if mask is not None and not bool((mask > 0).any()):
            raise AppInputError("the mask is empty: paint a stroke on the image first")
        if mask is None and self.conditional:
            generator, codes = self.generator, step.codes  # whole image through f: z and the class vector move
        else:
            generator, codes = self._canvas(step), step.codes
        request = EditRequest(self._dev(codes), prompts, None if mask is None else mask.to(self.device))
        deadline = time.monotonic() + self.time_limit if self.time_limit else None
        module = _AppEditModule(generator, self.semantic, [request], settings, self.preservation,
                                deadline=deadline, on_step=on_step)
        if mask is not None and step.layers:
            module.x0.copy_(step.image.to(self.device))  # preserve what was painted so far
        run_edit(module, "gpu" if self.device.type == "cuda" else "cpu", progress=True)
        module.deadline = None
        metrics = module.final_metrics()[0]
        with torch.no_grad():
            image = module.render().cpu()
        if mask is None:
            lat = {k: v.detach().cpu() for k, v in module.latents.items()}
            new_codes = {**step.codes, **{k: v for k, v in lat.items() if k != "w"}}
            w0 = lat["w"] if "w" in lat else self.generator.encode(self._dev(new_codes)).cpu()
            nxt = Step(new_codes, w0, image, [], label=f"whole image: {prompt}", metrics=metrics)
        else:
            nxt = Step(step.codes, step.w0, image, step.layers + [(module.latents["w"].detach().cpu(), mask.cpu())],
                       label=f"painted: {prompt}", metrics=metrics)
        nxt.files = self._save(module, nxt, prompts, settings)
        return nxt

    def _save(self, module: EditModule, step: Step, prompts: PromptSet, settings: EditSettings) -> list[str]:
        """edit.py's files for this edit (PNGs, metrics.json, latents.pt), the latents with the history's layers."""
        self._count += 1
        folder = self.out_dir / f"edit_{self._count:04d}"
        request = EditRequest(step.codes, prompts, None, step.label)
        write_outputs(folder, module, 0, step.metrics, asdict(settings), request)
        latents = torch.load(folder / "latents.pt", weights_only=True)
        latents.update(codes=step.codes, w0=step.w0, layers=step.layers)
        torch.save(latents, folder / "latents.pt")
        return [str(folder / "edited.png"), str(folder / "latents.pt"), str(folder / "comparison.png")]


def format_metrics(metrics: dict[str, float]) -> str:
    """The figures shown beside the result."""
    names = {"semantic_score": "semantic score (CLIP, higher = closer to the words)",
             "realism": "realism (discriminator score)", "preservation_l1": "preservation: L1 change outside the mask",
             "preservation_lpips": "preservation: LPIPS change outside the mask"}
    rows = [f"| {label} | {metrics[k]:.4f} |" for k, label in names.items() if k in metrics]
    return "| figure | value |\n|---|---|\n" + "\n".join(rows)
