"""EditModule: Paint by Word's masked-latent CLIP optimization as a LightningModule."""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pbw.editing.cmaes import SepCMAES
from pbw.editing.losses import PreservationLoss
from pbw.editing.masks import mask_overlay
from pbw.models.maskable import MaskableGenerator, resize_mask
from pbw.semantic import PromptSet, SemanticNet

OPTIMIZERS = ("cma+adam", "adam")
MASK_MODES = ("latent", "image")


@dataclass
class EditSettings:
    """Optimization settings (defaults: the paper's).

    optimizer: `cma+adam` (CMA-ES, then Adam from its best candidate) or `adam` alone.
    mask_mode: `latent` (edit latent inside the mask, frozen outside: the paper) or `image`
    (ablation: the whole latent changes, only the image CLIP sees is masked).
    population_chunk: candidates per request evaluated in one batch through G and CLIP (None: the
    whole population at once; 1: candidate by candidate, for comparison).
    """

    optimizer: str = "cma+adam"
    steps: int = 100
    lr: float = 0.01
    population: int = 50
    sigma0: float = 0.5
    generations: int = 20
    lam: float = 5.0
    mask_mode: str = "latent"
    population_chunk: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if self.steps < 0 or self.generations < 0 or self.lr <= 0 or self.sigma0 <= 0:
            raise ValueError(f"need steps >= 0, generations >= 0, lr > 0, sigma0 > 0; got {self}")


@dataclass
class EditRequest:
    """One edit: starting codes (batch of 1), prompts, and a [1, 1, R, R] mask (None: whole image)."""

    codes: dict[str, torch.Tensor]
    prompt: PromptSet
    mask: torch.Tensor | None = None
    name: str = ""
    notes: list[str] = field(default_factory=list)


class EditModule(pl.LightningModule):
    """Parameters: the edit latents of a batch of requests (all masked, or all whole-image).

    Masked requests optimize w = f(codes) inside the mask. Whole-image requests optimize w for
    generators with no class (StyleGAN2), or the floating-point codes (z, and a float class vector)
    through f for class-conditional ones (BigGAN); integer class labels stay fixed.
    """

    def __init__(self, generator: MaskableGenerator, semantic: SemanticNet, requests: list[EditRequest],
                 settings: EditSettings | None = None, preservation: PreservationLoss | None = None):
        super().__init__()
        if not requests:
            raise ValueError("no edit requests")
        if len({r.mask is None for r in requests}) != 1:
            raise ValueError("a batch must be all masked or all whole-image requests")
        self.settings = settings or EditSettings()
        self.generator = generator.eval().requires_grad_(False)
        self.semantic = semantic.eval().requires_grad_(False)
        self.preservation = (preservation or PreservationLoss(lpips=False)).eval()
        self.prompts = [r.prompt for r in requests]
        self.names = [r.name for r in requests]
        self.masked = requests[0].mask is not None
        dev = next(generator.parameters()).device
        codes = {k: torch.cat([r.codes[k].to(dev) for r in requests]) for k in requests[0].codes}
        self.code_keys = sorted(codes)
        for k, v in codes.items():
            self.register_buffer(f"code_{k}", v)
        with torch.no_grad():
            w0 = generator.encode(codes)
            self.register_buffer("w0", w0)
            res = generator.resolution
            mask = (torch.cat([resize_mask(r.mask.to(dev).float(), res) for r in requests]) if self.masked
                    else torch.ones(len(requests), 1, res, res, device=dev))
            self.register_buffer("mask", mask)
            self.register_buffer("x0", self._decode(w0, codes=codes))
        if not self.masked and "class" in codes:  # whole image through f: z and (BigGAN) the class vector
            space = {k: nn.Parameter(v.clone()) for k, v in generator.continuous_codes(codes).items()
                     if v.is_floating_point()}
        else:
            space = {"w": nn.Parameter(w0.clone())}
        self.latents = nn.ParameterDict(space)
        self.metrics_history: list[dict[str, float]] = []
        self._crop_gen = torch.Generator().manual_seed(self.settings.seed)  # reproducible Adam-phase crops

    # ---- rendering --------------------------------------------------------------------------
    @property
    def codes(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"code_{k}") for k in self.code_keys}

    def _decode(self, w, w0=None, mask=None, codes=None) -> torch.Tensor:
        return self.generator.decode(w, w0, mask, cond=codes)

    def render(self, latents: dict[str, torch.Tensor] | None = None, rep: int = 1) -> torch.Tensor:
        """Images from edit latents (default: the current ones); `rep` candidates per request."""
        lat = dict(self.latents) if latents is None else latents
        codes = {k: v.repeat_interleave(rep, 0) for k, v in self.codes.items()}
        if "w" not in lat:  # whole-image generation through f
            codes.update(lat)
            return self._decode(self.generator.encode(codes), codes=codes)
        if self.masked and self.settings.mask_mode == "latent":
            return self._decode(lat["w"], self.w0.repeat_interleave(rep, 0),
                                self.mask.repeat_interleave(rep, 0), codes=codes)
        return self._decode(lat["w"], codes=codes)

    def objective(self, x: torch.Tensor, rep: int = 1, u: torch.Tensor | None = None, crops: int | None = None,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-image loss terms of images x ([B * rep, ...], request-major)."""
        t, wt = self.semantic.targets(self.prompts)
        t, wt = t.repeat_interleave(rep, 0), wt.repeat_interleave(rep, 0)
        mask = self.mask.repeat_interleave(rep, 0)
        cos = self.semantic.similarity(x, mask if self.masked else None, (t, wt), crops=crops, u=u,
                                      generator=generator)
        out = {"semantic": self.semantic.loss_from_cos(cos, wt), "semantic_score": self.semantic.score_from_cos(cos, wt)}
        if self.masked:
            l1, lp = self.preservation(x, self.x0.repeat_interleave(rep, 0), mask)
            out.update(preservation_l1=l1, preservation_lpips=lp)
            out["loss"] = out["semantic"] + self.settings.lam * (l1 + lp)
        else:
            out["loss"] = out["semantic"]
        return out

    @torch.no_grad()
    def realism(self, x: torch.Tensor) -> torch.Tensor | None:
        """The generator's discriminator score per image, when it has one."""
        d = getattr(self.generator, "discriminator", None)
        if d is None:
            return None
        d.eval()
        if "class" in self.codes and len(inspect.signature(d.forward).parameters) > 1:
            y = self.latents["class"] if "class" in self.latents else self.codes["class"]
            return d(x, y.argmax(1) if y.is_floating_point() else y).flatten()  # a class vector: its top class
        return d(x).flatten()

    # ---- CMA-ES -----------------------------------------------------------------------------
    def _active(self) -> torch.Tensor:
        """[B, D] dims the CMA-ES searches: spatial latents only where the mask is on."""
        parts = []
        for v in self.latents.values():
            if self.masked and self.settings.mask_mode == "latent" and v.ndim == 4:
                on = resize_mask(self.mask, v.shape[-1]) > 0
                parts.append(on.expand(-1, v.shape[1], -1, -1).flatten(1))
            else:
                parts.append(torch.ones_like(v, dtype=torch.bool).flatten(1))
        return torch.cat(parts, 1)

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for k, v in self.latents.items():
            n = v[0].numel()
            out[k] = flat[:, i:i + n].reshape(-1, *v.shape[1:])
            i += n
        return out

    @torch.no_grad()
    def run_cma(self, progress: bool = True) -> torch.Tensor:
        """The paper's CMA-ES phase: `generations` of `population` candidates per request, each
        generation evaluated as one batch through G and CLIP (all candidates of a request see the
        same random crops). Sets the latents to each request's best candidate; returns its loss [B]."""
        s = self.settings
        b = len(self.prompts)
        flat0 = torch.cat([v.detach().flatten(1) for v in self.latents.values()], 1)
        gen = torch.Generator(device=flat0.device).manual_seed(s.seed)
        es = SepCMAES(flat0, s.sigma0, s.population, self._active(), gen)
        chunk = s.population_chunk or s.population
        k = max(self.semantic.crops, 1)
        for g in tqdm(range(s.generations), desc="CMA-ES", disable=not progress, leave=False):
            pop = es.ask()  # [B, P, D]
            u = torch.rand(b, 1, k, 3, generator=gen, device=flat0.device)
            fit = []
            for j in range(0, s.population, chunk):
                c = pop[:, j:j + chunk]
                n = c.shape[1]
                x = self.render(self._unflatten(c.flatten(0, 1)), rep=n)
                fit.append(self.objective(x, rep=n, u=u.expand(-1, n, -1, -1).flatten(0, 1))["loss"].view(b, n))
            fit = torch.cat(fit, 1)
            es.tell(fit)
            self._log_scalars({"cma/best_loss": es.best_f.mean(), "cma/generation": g + 1,
                               "cma/sigma": es.sigma.mean()})
        for k_, v in self._unflatten(es.best_x).items():
            self.latents[k_].data.copy_(v)
        return es.best_f

    # ---- Lightning --------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        for m in (self.generator, self.semantic, self.preservation):
            m.eval()
        return self

    def _log_scalars(self, values: dict) -> None:
        if self._trainer is not None and self.logger is not None:
            self.logger.log_metrics({k: float(v) for k, v in values.items()}, step=self.global_step)

    def on_fit_start(self) -> None:
        if self.settings.optimizer == "cma+adam" and self.settings.generations > 0:
            self.run_cma(progress=self.trainer.progress_bar_callback is not None)

    def train_dataloader(self):
        return DataLoader(range(max(self.settings.steps, 1)), batch_size=1)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.latents.values(), lr=self.settings.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.settings.lr, total_steps=max(self.settings.steps, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch, batch_idx):
        x = self.render()
        terms = self.objective(x, generator=self._crop_gen)
        logs = {k: v.detach().mean() for k, v in terms.items()}
        r = self.realism(x.detach())
        if r is not None:
            logs["realism"] = r.mean()
        self.log_dict(logs, prog_bar=False, on_step=True, batch_size=len(self.prompts))
        self.metrics_history.append({k: float(v) for k, v in logs.items()})
        return terms["loss"].sum()

    def on_train_end(self) -> None:
        log_image = getattr(self.logger, "log_image", None)
        if log_image is None:
            return
        with torch.no_grad():
            edited = self.render()
        to01 = lambda t: ((t.clamp(-1, 1) + 1) / 2).cpu()  # noqa: E731
        caps = [f"{n}: {' | '.join(p.texts)}" for n, p in zip(self.names, self.prompts)]
        log_image("original", list(to01(self.x0)), caption=caps)
        log_image("mask_overlay", list(to01(mask_overlay(self.x0, self.mask))), caption=caps)
        log_image("edited", list(to01(edited)), caption=caps)

    # ---- results ----------------------------------------------------------------------------
    @torch.no_grad()
    def final_metrics(self) -> list[dict[str, float]]:
        """Per request: loss terms, `semantic_score` (CLIP cosine of the whole masked view with the
        prompts), `realism` (when a discriminator exists), preservation L1/LPIPS."""
        x = self.render()
        terms = self.objective(x)
        view = self.objective(x, crops=0)
        r = self.realism(x)
        out = []
        for i in range(len(self.prompts)):
            m = {k: float(v[i]) for k, v in terms.items() if k != "semantic_score"}
            m["semantic_score"] = float(view["semantic_score"][i])
            if r is not None:
                m["realism"] = float(r[i])
            out.append(m)
        return out


def run_edit(module: EditModule, accelerator: str = "auto", logger=False, progress: bool = True) -> EditModule:
    """Optimize `module`'s latents: CMA-ES (if chosen) then `steps` of Adam with a Lightning Trainer."""
    s = module.settings
    if s.steps == 0:
        if s.optimizer == "cma+adam":
            module.run_cma(progress)
        return module
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # G and CLIP stay frozen
    trainer = pl.Trainer(max_steps=s.steps, accelerator=accelerator, devices=1, logger=logger,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1, enable_progress_bar=progress)
    trainer.fit(module)
    return module
