"""Project a photo into a generator: find the codes whose image reproduces it, then optionally tune
the generator's weights around them (pivotal tuning), so that the photo can be edited with words.

`project(image, generator, settings)` returns an `EditResult` with `source="photo"`: `original` and
`edited` are the photo (resized and center-cropped to the generator's resolution, in [-1, 1]),
`codes` and `w0` the found latent, `metrics` the reconstruction's PSNR / L1 (and LPIPS when a
perceptual net is used). It is an edit's base: `EditRequest(prompt, base=result, mask=...)` keeps the
photo's pixels outside the mask. With pivotal tuning the result carries the tuned weights
(`EditResult.generator_state`), the Editor edits it with them, and `EditResult.save` writes them to
`generator.pt` next to `latents.pt`.

The latent search follows NVIDIA's StyleGAN2 projector (stylegan2-ada-pytorch `projector.py`): Adam from
the mean latent, a learning rate ramped up then down (cosine), Gaussian noise on the latent that
decays to zero over the first 75% of the steps, a perceptual (LPIPS) plus a pixel (MSE) loss.
NVIDIA also optimizes the per-layer noise maps (with a regularizer that keeps them noise-like); pbw
decodes with its constant noise buffers, so the noise stays fixed and there is nothing to regularize
(and nothing else that would have to travel with the result).

- StyleGAN2: space `w` (one w for every layer, the default; NVIDIA's projector) or `wplus` (one w per
  layer: closer reconstructions, edits then run in `wplus`). The start is the mean w (over
  `w_avg_samples` mapped z's), the noise scale the spread of w around it. The stored `codes` hold a
  zero z: a projected latent has no z, and a whole-image edit in space `z` would start afresh.
- BigGAN: space `z` (z and the class vector, the default) or `w` (also the first block's output
  features). The start is the best of `class_samples` z draws for every class (or for `classes`); the
  class vector is then optimized freely, as in whole-image editing.

Pivotal tuning (PTI, Roich et al. 2021) then fine-tunes the decode path h only (StyleGAN2's synthesis
network; BigGAN's blocks after the first and its output layer), so the pivot codes and `w0` keep
their meaning; a locality regularizer keeps the tuned generator's images of latents between the
pivot and random latents (`w0 + locality_alpha * (w_random - w0)`) close to the original's.

The loops are plain loops with tqdm, not Lightning: a projection is one image's few hundred small
steps in two phases with per-step schedules, where a Trainer's start-up and per-step hooks would cost
a sizable share of the time. Progress goes to `report(phase, done, total)` (the Editor's `EditProgress`
signature) and the stop conditions are the Editor's `StopEdit`s (`TimeLimit`, `Cancel`: anything with
a `reason()`), checked every step.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.utils import save_image
from tqdm.auto import tqdm

from pbw.data.common import load_image, pil_to_unit_tensor, to01
from pbw.editing.figures import comparison_image
from pbw.editing.result import EditResult
from pbw.models.maskable import Codes, MaskableGenerator

MIN_SIDE = 16  # smaller photos are refused: nothing to reconstruct
PERCEPTUAL_MAX = 256  # the perceptual loss sees at most 256 px (area-downsampled), as in NVIDIA's projector
PhotoSource = str | os.PathLike | bytes | Image.Image | torch.Tensor


class PhotoError(ValueError):
    """A photo that cannot be projected (unreadable, too small)."""


@dataclass
class ProjectSettings:
    """Every setting of a projection; defaults reconstruct the bundled 32 px miniature in a few seconds
    on the CPU.

    steps, lr: latent optimization steps and Adam's peak learning rate (ramped up over the first
    `lr_rampup` and down, cosine, over the last `lr_rampdown` of the steps).
    space: StyleGAN2 `w` (default) or `wplus`; BigGAN `z` (z + class vector, default) or `w` (also the
    first block's features); None: the default.
    noise, noise_ramp: latent noise (times the latent's spread) at the start, decaying (squared) to 0
    at `noise_ramp` of the steps.
    pixel_weight, perceptual_weight: weights of the MSE and of the perceptual (LPIPS) loss, when a
    perceptual net is given.
    tune_steps, tune_lr: pivotal tuning steps (0: none) and Adam's learning rate on the weights (None: 1e-3
    for StyleGAN2, PTI's 3e-4 for BigGAN: on the miniature, 1e-3 made BigGAN's tuned weights both less
    faithful and much less editable).
    locality_weight, locality_alpha: PTI's locality regularizer (0: off) and how far from the pivot
    towards a random latent its samples lie (a fraction of the distance).
    w_avg_samples: z's mapped to estimate StyleGAN2's mean w and spread.
    class_samples: BigGAN: z draws tried per class to choose the start.
    seed: seed of the noise, the start search and the locality samples.
    time_limit: seconds for the whole projection (None: no limit); on reaching it, what was found is kept.
    """

    steps: int = 200
    lr: float = 0.1
    space: str | None = None
    noise: float = 0.05
    noise_ramp: float = 0.75
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    tune_steps: int = 100
    tune_lr: float | None = None
    locality_weight: float = 0.1
    locality_alpha: float = 0.5
    w_avg_samples: int = 10000
    class_samples: int = 8
    seed: int = 0
    time_limit: float | None = None

    def __post_init__(self):
        bad = [
            f"{k}={getattr(self, k)}"
            for k, ok in (
                ("steps", self.steps >= 0),
                ("tune_steps", self.tune_steps >= 0),
                ("lr", self.lr > 0),
                ("tune_lr", self.tune_lr is None or self.tune_lr > 0),
                ("noise", self.noise >= 0),
                ("noise_ramp", 0 < self.noise_ramp <= 1),
                ("lr_rampup", 0 <= self.lr_rampup <= 1),
                ("lr_rampdown", 0 < self.lr_rampdown <= 1),
                ("pixel_weight", self.pixel_weight >= 0),
                ("perceptual_weight", self.perceptual_weight >= 0),
                ("locality_weight", self.locality_weight >= 0),
                ("locality_alpha", 0 <= self.locality_alpha <= 1),
                ("w_avg_samples", self.w_avg_samples >= 2),
                ("class_samples", self.class_samples >= 1),
                ("time_limit", self.time_limit is None or self.time_limit >= 0),
            )
            if not ok
        ]
        if bad:
            raise ValueError(
                f"bad projection settings {', '.join(bad)}: need steps, tune_steps, noise, weights >= 0; "
                "lr, tune_lr > 0; noise_ramp, lr_rampdown in (0, 1]; lr_rampup, locality_alpha in [0, 1]; "
                "w_avg_samples >= 2, class_samples >= 1"
            )


# ---- the photo ------------------------------------------------------------------------------------
def load_photo(source: PhotoSource, resolution: int, name: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """A photo as [1, 3, R, R] in [-1, 1] and notes on what was done to it: any mode converted to RGB
    (grayscale, CMYK, palette; transparency composited on white), the shorter side resized to R
    (bicubic, antialiased) and the center cropped (pbw.data.common's `load_image`). `source` is a path,
    encoded bytes, a PIL image or an image tensor ([3, H, W] or [1, 3, H, W] in [-1, 1]). Raises
    `PhotoError` (one line) for an unreadable file or a side under `MIN_SIDE` px."""
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else "the photo"
    if isinstance(source, torch.Tensor):
        x = source.detach().float().cpu()
        x = x[None] if x.ndim == 3 else x
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise PhotoError(
                f"{name}: an image tensor must be [3, H, W] or [1, 3, H, W] in [-1, 1], got {tuple(x.shape)}"
            )
        if x.shape[-2:] == (resolution, resolution):
            return x.clamp(-1, 1), []
        source = Image.fromarray(((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = (
            e.strerror
            if isinstance(e, OSError) and e.strerror
            else str(e).splitlines()[0]
            if str(e)
            else type(e).__name__
        )
        raise PhotoError(f"cannot read image {name}: {reason}") from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise PhotoError(f"image {name} is {w}x{h} px: too small to project (at least {MIN_SIDE} px on each side)")
    notes = []
    if img.mode != "RGB":
        alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        notes.append(f"converted from {img.mode} to RGB" + (" (transparent pixels on white)" if alpha else ""))
    if (w, h) != (resolution, resolution):
        crop = "" if w == h else " (center-cropped to a square)"
        notes.append(f"resized from {w}x{h} to {resolution}x{resolution} px{crop}")
    pil = load_image(img, name, resolution)  # to RGB, shorter side to R, center crop
    return pil_to_unit_tensor(pil)[None], notes


# ---- metrics --------------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction_metrics(
    x: torch.Tensor, target: torch.Tensor, perceptual: nn.Module | None = None
) -> dict[str, float]:
    """PSNR (dB, images in [0, 1]), mean |difference| (0..1 scale) and, with a perceptual net, LPIPS,
    each averaged over the batch."""
    a, b = (x.float().clamp(-1, 1) + 1) / 2, (target.float().clamp(-1, 1) + 1) / 2
    mse = (a - b).square().flatten(1).mean(1).clamp(min=1e-10)
    out = {"psnr": float((10 * torch.log10(1 / mse)).mean()), "l1": float((a - b).abs().mean())}
    if perceptual is not None:
        out["lpips"] = float(_perceptual(perceptual, x, target).mean())
    return out


def _perceptual(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] > PERCEPTUAL_MAX:
        x, y = (F.interpolate(t, size=(PERCEPTUAL_MAX, PERCEPTUAL_MAX), mode="area") for t in (x, y))
    return net(x, y).flatten()


def build_perceptual(
    mode: str | bool = "auto", net: str = "alex", weights: str | None = None
) -> tuple[nn.Module | None, str]:
    """The projection's perceptual net and a note saying which loss is used. `mode`: "auto" (LPIPS when
    its ImageNet backbone is at hand: the local file `weights` or torchvision's download cache; else
    the pixel loss alone, without trying to download), True/"lpips" (LPIPS, downloading the backbone
    when needed, or an error) or False/"none" (pixel loss only)."""
    import torchvision

    from pbw.editing.losses import _TV_WEIGHTS, build_lpips

    mode = {True: "lpips", False: "none"}.get(mode, mode)
    if mode not in ("auto", "lpips", "none"):
        raise ValueError(f"perceptual loss must be auto, lpips or none, got {mode!r}")
    if mode == "none":
        return None, "projection loss: pixels (MSE) only"
    if mode == "auto" and weights is None and net in _TV_WEIGHTS:
        url = getattr(torchvision.models, _TV_WEIGHTS[net]).DEFAULT.url
        if not (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file():
            return None, (
                f"projection loss: pixels (MSE) only: LPIPS' {net} backbone is not in torchvision's cache "
                "(give --lpips_weights FILE, or --lpips true to download it)"
            )
    try:
        return build_lpips(net, weights), f"projection loss: LPIPS ({net}) + pixels (MSE)"
    except RuntimeError as e:
        if mode == "lpips":
            raise ValueError(str(e)) from None
        return None, (
            f"projection loss: pixels (MSE) only: LPIPS' {net} backbone is not available offline "
            "(give --lpips_weights FILE to use it)"
        )


# ---- the latent search ----------------------------------------------------------------------------
class _Latent:
    """What a projection optimizes for one family and space: parameters, their image, the result's codes."""

    def __init__(
        self,
        g: MaskableGenerator,
        space: str,
        target: torch.Tensor,
        s: ProjectSettings,
        classes,
        perceptual,
        gen: torch.Generator,
    ):
        self.g, self.space, dev = g, space, target.device
        self.noisy: dict[str, float] = {}  # parameter -> noise scale (its spread)
        mean = g.mean_latent(s.w_avg_samples, gen)
        self.from_mean = mean is not None
        if self.from_mean:  # search the decode latent itself, from the mean (codes stay zero)
            w_avg, spread = mean
            self.codes = {k: torch.zeros_like(v) for k, v in g.sample(1, seed=0).items()}
            self.params = {k: v.clone() for k, v in g.to_space(self.codes, space, w_avg.to(dev)).items()}
            self.noisy = dict.fromkeys(self.params, spread)
        else:
            codes = _best_start(g, target, s, classes, perceptual, gen)
            self.params = {k: v.clone() for k, v in g.continuous_codes(codes).items() if v.is_floating_point()}
            self.noisy = {"z": math.sqrt(self.params["z"].shape[1])} if "z" in self.params else {}
            if space == "w":  # the first block's features too: an offset from encode(codes)
                with torch.no_grad():
                    self.params["w_offset"] = torch.zeros_like(g.encode(codes))
            self.codes = {k: v for k, v in g.continuous_codes(codes).items() if k not in self.params}

    def decode_latent(self, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Codes]:
        """(w, cond) of parameters p."""
        if self.from_mean:
            return self.g.from_space(p, self.space, self.codes)
        codes = {**self.codes, **{k: v for k, v in p.items() if k != "w_offset"}}
        w = self.g.encode(codes)
        return (w + p["w_offset"] if "w_offset" in p else w), codes

    def image(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        w, cond = self.decode_latent(p)
        return self.g.decode(w, cond=cond)


def _best_start(
    g: MaskableGenerator, target: torch.Tensor, s: ProjectSettings, classes, perceptual, gen: torch.Generator
) -> Codes:
    """A conditional generator's start: of `class_samples` draws per class (or per given class), the
    codes whose image is closest to the target."""
    n_classes = getattr(g, "n_classes", None)
    if not g.is_conditional or n_classes is None:
        best, best_loss = None, float("inf")
        for _ in range(s.class_samples):
            c = g.sample(1, seed=int(torch.randint(2**31, (1,), generator=gen)))
            with torch.no_grad():
                loss = _loss(g.decode(g.encode(c), cond=c), target, s, perceptual)
            if float(loss) < best_loss:
                best, best_loss = c, float(loss)
        return best
    labels = torch.arange(n_classes) if classes is None else torch.as_tensor(classes).flatten()
    seeds = torch.randint(2**31, (len(labels),), generator=gen)
    best, best_loss = None, float("inf")
    for label, seed in zip(labels.tolist(), seeds.tolist(), strict=True):
        c = g.sample(s.class_samples, seed=seed, classes=label)
        with torch.no_grad():
            x = g.decode(g.encode(c), cond=c)
            losses = _loss(x, target.expand_as(x), s, perceptual, reduce=False)
        k = int(losses.argmin())
        if float(losses[k]) < best_loss:
            best, best_loss = {key: v[k : k + 1] for key, v in c.items()}, float(losses[k])
    return best


def _loss(x: torch.Tensor, target: torch.Tensor, s: ProjectSettings, perceptual, reduce: bool = True) -> torch.Tensor:
    loss = s.pixel_weight * (x - target).square().flatten(1).mean(1)
    if perceptual is not None and s.perceptual_weight > 0:
        loss = loss + s.perceptual_weight * _perceptual(perceptual, x, target)
    return loss.sum() if reduce else loss


def _lr_at(t: float, s: ProjectSettings) -> float:
    """NVIDIA's schedule: a linear ramp up over `lr_rampup`, a cosine ramp down over the last `lr_rampdown`."""
    ramp = min(1.0, (1.0 - t) / s.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * (min(1.0, t / s.lr_rampup) if s.lr_rampup > 0 else 1.0)


class _Clock:
    """The stop conditions: the settings' time limit and the given `StopEdit`s (anything with `reason()`)."""

    def __init__(self, time_limit: float | None, stops: Sequence):
        self.start, self.limit, self.stops = time.monotonic(), time_limit, list(stops)
        self.why: str | None = None

    def stop(self) -> bool:
        if self.why is None:
            if self.limit is not None and time.monotonic() - self.start > self.limit:
                self.why = f"stopped early: the time limit of {self.limit:g} s was reached"
            for s in self.stops:
                self.why = self.why or s.reason()
        return self.why is not None


# ---- pivotal tuning -------------------------------------------------------------------------------
def _pivotal_tuning(
    g: MaskableGenerator,
    w0: torch.Tensor,
    codes: Codes,
    target: torch.Tensor,
    s: ProjectSettings,
    perceptual,
    gen: torch.Generator,
    clock: _Clock,
    report,
    progress: bool,
    history: list,
) -> tuple[dict[str, torch.Tensor], int]:
    """Fine-tune h around the pivot (w0, codes); returns the tuned parameters and the steps done."""
    from pbw.editing.result import generator_copy

    names = g.decode_parameter_names()
    tuned = generator_copy(g)
    tuned.eval().requires_grad_(False)
    params = dict(tuned.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    opt = torch.optim.Adam([params[n] for n in names], lr=s.tune_lr)
    cont = g.continuous_codes(codes)
    done = 0
    for step in tqdm(range(s.tune_steps), desc="pivotal tuning", disable=not progress, leave=False):
        if clock.stop():
            break
        if s.locality_weight > 0:  # the pivot and a latent near it, in one batch
            r = g.continuous_codes(g.sample(1, seed=int(torch.randint(2**31, (1,), generator=gen))))
            r = {k: v.to(w0.device) for k, v in r.items()}
            cond_r = {k: torch.lerp(cont[k], r[k], s.locality_alpha) for k in cont}
            with torch.no_grad():
                w_r = torch.lerp(w0, g.encode(r), s.locality_alpha)
                ref = g.decode(w_r, cond=cond_r)
            x = tuned.decode(torch.cat([w0, w_r]), cond={k: torch.cat([cont[k], cond_r[k]]) for k in cont})
            fit, local = _loss(x[:1], target, s, perceptual), _loss(x[1:], ref, s, perceptual)
            loss = fit + s.locality_weight * local
            record = {"phase": 1.0, "loss": float(fit.detach()), "locality": float(local.detach())}
        else:
            loss = _loss(tuned.decode(w0, cond=codes), target, s, perceptual)
            record = {"phase": 1.0, "loss": float(loss.detach())}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        history.append(record)
        if report is not None:
            report("pivotal tuning", done, s.tune_steps)
    return {n: params[n].detach().cpu().clone() for n in names}, done


# ---- projection -----------------------------------------------------------------------------------
def project(
    image: PhotoSource,
    generator: MaskableGenerator,
    settings: ProjectSettings | None = None,
    *,
    perceptual: nn.Module | None = None,
    classes: int | Sequence[int] | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    report: Callable[[str, int, int], None] | None = None,
    stops: Sequence = (),
    name: str = "photo",
    notes: Sequence[str] = (),
) -> EditResult:
    """Project `image` (path, bytes, PIL image or [1, 3, H, W] tensor in [-1, 1]) into `generator`.

    `perceptual`: an LPIPS-like net (images in [-1, 1] -> distance per image; see `build_perceptual`),
    None for the pixel loss alone. `classes`: BigGAN: the class(es) to search the start in (None: all).
    `report(phase, done, total)` is called after every step ("projection", then "pivotal tuning");
    `stops` are `StopEdit`s (e.g. `TimeLimit`, `Cancel`) checked every step. The result keeps what was
    reached when stopped, and says why in its notes. `generator` is left unchanged (tuning works on a copy).
    """
    from pbw.editing.editor import resolve_device

    dev = resolve_device(device)
    g = generator.to(dev).eval().requires_grad_(False)
    s = resolved(g, settings)
    space = s.space
    photo, photo_notes = load_photo(image, g.resolution, name if not isinstance(image, (str, os.PathLike)) else None)
    target = photo.to(dev)
    if perceptual is not None:
        perceptual = perceptual.to(dev).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(s.seed)
    clock = _Clock(s.time_limit, stops)
    t0 = time.perf_counter()
    with torch.enable_grad():
        lat = _Latent(g, space, target, s, classes, perceptual, gen)
        with torch.no_grad():
            start_image = lat.image(lat.params)
            start, start_loss = reconstruction_metrics(start_image, target), _loss(start_image, target, s, perceptual)
        start_params = {k: v.detach().clone() for k, v in lat.params.items()}
        params = {k: v.requires_grad_(True) for k, v in lat.params.items()}
        opt = torch.optim.Adam(params.values(), lr=s.lr, betas=(0.9, 0.999))
        history: list[dict[str, float]] = []
        for step in tqdm(range(s.steps), desc="projection", disable=not progress, leave=False):
            if clock.stop():
                break
            t = step / max(s.steps, 1)
            for group in opt.param_groups:
                group["lr"] = s.lr * _lr_at(t, s)
            noise_factor = s.noise * max(0.0, 1.0 - t / s.noise_ramp) ** 2
            noisy = {
                k: v + torch.randn(v.shape, generator=gen).to(dev) * (noise_factor * lat.noisy[k])
                if k in lat.noisy and noise_factor > 0
                else v
                for k, v in params.items()
            }
            loss = _loss(lat.image(noisy), target, s, perceptual)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"phase": 0.0, "loss": float(loss.detach())})
            if report is not None:
                report("projection", step + 1, s.steps)
        with torch.no_grad():
            found = {k: v.detach() for k, v in params.items()}
            if _loss(lat.image(found), target, s, perceptual) > start_loss:
                found = (
                    start_params  # the search ended worse than its start (BigGAN's best draw can be): keep the start
                )
                photo_notes.append("the latent search did not improve on its start: kept the start")
            w0, codes = lat.decode_latent(found)
            w0, codes = w0.detach().clone(), {k: v.detach().clone() for k, v in codes.items()}
            recon = g.decode(w0, cond=codes)
        latent_seconds = time.perf_counter() - t0
        metrics = reconstruction_metrics(recon, target, perceptual)
        state, tuned_steps = None, 0
        if s.tune_steps > 0 and not clock.stop():
            state, tuned_steps = _pivotal_tuning(
                g, w0, codes, target, s, perceptual, gen, clock, report, progress, history
            )
    all_notes = list(notes) + photo_notes
    if state is not None:
        from pbw.editing.result import apply_generator_state

        tuned = apply_generator_state(g, state)
        with torch.no_grad():
            tuned_metrics = reconstruction_metrics(tuned.decode(w0, cond=codes), target, perceptual)
        metrics = {**{f"{k}_before_tuning": v for k, v in metrics.items()}, **tuned_metrics}
    seconds = time.perf_counter() - t0
    metrics.update(
        psnr_start=start["psnr"],
        l1_start=start["l1"],
        seconds=seconds,
        latent_seconds=latent_seconds,
        steps_done=float(len(history) - tuned_steps),
        tune_steps_done=float(tuned_steps),
    )
    all_notes.append(
        f"projected into {type(g).__name__}'s {space} space ({len(history) - tuned_steps} steps"
        + (f", then {tuned_steps} steps of pivotal tuning" if tuned_steps else "")
        + f"): reconstruction PSNR {metrics['psnr']:.1f} dB in {seconds:.1f} s"
    )
    if clock.why:
        all_notes.append(clock.why)
    return EditResult(
        codes={k: v.cpu() for k, v in codes.items()},
        w0=w0.cpu(),
        original=photo,
        edited=photo.clone(),
        name=name,
        source="photo",
        metrics=metrics,
        settings={
            **asdict(s),
            "space": space,
            "perceptual": perceptual is not None,
            "device": str(dev),
            "kind": "projection",
        },
        history=history,
        notes=all_notes,
        generator_state=state,
    )


def resolved(g: MaskableGenerator, settings: ProjectSettings | None) -> ProjectSettings:
    """`settings` with the generator's defaults filled in (space, tune_lr)."""
    from dataclasses import replace

    s = settings or ProjectSettings()
    lr = s.tune_lr if s.tune_lr is not None else g.tuning_lr
    return replace(s, space=_space(g, s.space), tune_lr=lr)


def _space(g: MaskableGenerator, space: str | None) -> str:
    allowed = g.projection_spaces
    if space is None:
        return allowed[0]
    if space not in allowed:
        raise ValueError(f"this generator projects photos into space {' or '.join(allowed)}, not {space!r}")
    return space


@torch.no_grad()
def reconstruction(result: EditResult, generator: MaskableGenerator) -> torch.Tensor:
    """The generator's image of a projection's codes (with its tuned weights, if any): [1, 3, R, R]."""
    g = result.tuned_generator(generator)
    dev = next(g.parameters()).device
    return g.decode(result.w0.to(dev), cond={k: v.to(dev) for k, v in result.codes.items()}).cpu()


def edit_space(result: EditResult, generator: MaskableGenerator) -> str | None:
    """The latent space edits of a projected photo should optimize (None: the paper's default): StyleGAN2
    edits the projection's `w` or `wplus` (a whole-image edit's default, `z`, would start afresh: a
    projection has no z); BigGAN its block-0 features `w` when the projection optimized them. An edit of
    a photo passes on the space it edited. The whole-image space (codes through f) would start afresh."""
    settings = result.settings or {}
    space = settings.get("space") if settings.get("kind") == "projection" or result.source == "photo" else None
    if space is None or space == generator.default_spaces["whole"]:
        return None
    return space


def save_projection(result: EditResult, generator, out: str | Path) -> dict[str, Path]:
    """`result.save(out)` plus reconstruction.png and comparison.png = photo | reconstruction."""
    files = result.save(out)
    recon = reconstruction(result, generator)
    files["reconstruction"] = Path(out) / "reconstruction.png"
    save_image(to01(recon), files["reconstruction"])
    comparison_image([("photo", to01(result.original)), ("reconstruction", to01(recon))]).save(files["comparison"])
    return files
