"""EditModule: Paint by Word's masked-latent CLIP optimization as a LightningModule.

The editing core (`pbw.editing.editor.Editor`) builds it; clients never do.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pbw.editing.cmaes import SepCMAES
from pbw.editing.losses import PreservationLoss
from pbw.editing.masks import mask_overlay
from pbw.editing.request import EditRequest, Region
from pbw.editing.result import to01
from pbw.models.maskable import Codes, MaskableGenerator, resize_mask
from pbw.semantic import SemanticNet

__all__ = ["MASK_MODES", "OPTIMIZERS", "EditModule", "EditRequest", "EditSettings", "Region"]

OPTIMIZERS = ("cma+adam", "adam")
MASK_MODES = ("latent", "image")
PAPER_LR = 0.01  # the paper's Adam step size (256 px generators)


@dataclass
class EditSettings:
    """Every setting of an edit, with the paper's defaults; pbw-edit, its YAML configs, the app and the
    experiment runner all take this one declaration.

    optimizer: `cma+adam` (CMA-ES, then Adam from its best candidate) or `adam` alone.
    steps, lr: Adam steps (one-cycle schedule peaking at lr). lr None: the step size the generator
    recommends for the edit's kind (`MaskableGenerator.edit_settings`, from its checkpoint), else the
    paper's 0.01.
    population, generations, sigma0: CMA-ES candidates per generation, generations, initial step size.
    lam: weight of the preservation loss (pixels outside the mask).
    crops: random crops per image CLIP sees (paper: 32).
    space: the latent the edit optimizes; None: the generator's paper default (StyleGAN2: `w` for a
    masked edit, `z` for a whole image; BigGAN: `w` = first-block features, `z` = z + class vector).
    mask_mode: `latent` (the latent acts inside the mask only: the paper) or `image` (ablation: the
    whole latent changes, only the image CLIP sees is masked).
    population_chunk: candidates per request evaluated in one batch (None: the whole population).
    seed: seed of the optimization's randomness (CMA-ES samples, crops).
    batch_size: requests optimized together.
    """

    optimizer: str = "cma+adam"
    steps: int = 100
    lr: float | None = None
    population: int = 50
    generations: int = 20
    sigma0: float = 0.5
    lam: float = 5.0
    crops: int = 32
    space: str | None = None
    mask_mode: str = "latent"
    population_chunk: int | None = None
    seed: int = 0
    batch_size: int = 4

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {self.mask_mode!r}")
        bad = [
            f"{k}={getattr(self, k)}"
            for k, ok in (
                ("steps", self.steps >= 0),
                ("generations", self.generations >= 0),
                ("lr", self.lr is None or self.lr > 0),
                ("sigma0", self.sigma0 > 0),
                ("population", self.population >= 2),
                ("crops", self.crops >= 0),
                ("batch_size", self.batch_size >= 1),
            )
            if not ok
        ]
        if bad:
            raise ValueError(
                f"bad edit settings {', '.join(bad)}: need steps, generations, crops >= 0, lr, sigma0 > 0, "
                "population >= 2, batch_size >= 1"
            )

    def for_generator(self, generator: MaskableGenerator, masked: bool) -> EditSettings:
        """These settings with those left None taken from what `generator` recommends for a masked or
        whole-image edit (`MaskableGenerator.edit_settings`), and an lr still None the paper's."""
        recommended = generator.edit_settings.get("masked" if masked else "whole", {})
        unknown = sorted(set(recommended) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"the generator recommends unknown edit settings {unknown}; see EditSettings")
        out = replace(self, **{k: v for k, v in recommended.items() if getattr(self, k) is None})
        return out if out.lr is not None else replace(out, lr=PAPER_LR)


class EditModule(pl.LightningModule):
    """Parameters: the edit latents (in one latent space) of a batch of requests, all masked or all
    whole-image, all with the same number K of regions. A masked request's latent acts inside its mask
    (`mask_mode="latent"`), its start latent w0 outside; a request with a base image keeps that image's
    pixels outside the mask. With K regions each has its own latent (K latents a request, [B * K, ...],
    request-major), acting inside its own mask (the later region wins where masks overlap); the
    semantic loss is the sum of each region's CLIP loss on its own masked view with its own words, and
    the preservation loss acts outside the union of the masks."""

    def __init__(
        self,
        generator: MaskableGenerator,
        semantic: SemanticNet,
        requests: list[EditRequest],
        settings: EditSettings | None = None,
        preservation: PreservationLoss | None = None,
    ):
        super().__init__()
        if not requests:
            raise ValueError("no edit requests")
        if len({r.masked for r in requests}) != 1:
            raise ValueError("a batch must be all masked or all whole-image requests")
        if len({len(r.all_regions) for r in requests}) != 1:
            raise ValueError("a batch must hold requests with the same number of regions")
        self.masked = requests[0].masked
        self.settings = (settings or EditSettings()).for_generator(generator, self.masked)
        self.generator = generator.eval().requires_grad_(False)
        self.semantic = semantic.eval().requires_grad_(False)
        self.preservation = (preservation or PreservationLoss(lpips=False)).eval()
        self.regions = len(requests[0].all_regions)
        self.prompts = [g.prompt for r in requests for g in r.all_regions]  # request-major, one per region
        self.names = [r.name for r in requests]
        self.space = generator.space(self.settings.space, self.masked)
        if self.regions > 1:
            _check_regions(generator, self.space, self.settings)
        dev = next(generator.parameters()).device
        _check_tuned_weights(generator, requests)
        starts = [_start(generator, r, dev) for r in requests]
        codes = {k: torch.cat([c[k] for c, _, _ in starts]) for k in starts[0][0]}
        self.code_keys = sorted(codes)
        for k, v in codes.items():
            self.register_buffer(f"code_{k}", v)
        self.register_buffer("w0", torch.cat([w for _, w, _ in starts]))
        res = generator.resolution
        mask = (  # [B, K, R, R]: one channel per region
            torch.cat(
                [torch.cat([resize_mask(g.mask.to(dev).float(), res) for g in r.all_regions], 1) for r in requests]
            )
            if self.masked
            else torch.ones(len(requests), 1, res, res, device=dev)
        )
        self.register_buffer("mask", mask)
        self.register_buffer("union", mask.amax(1, keepdim=True))  # where any region acts
        with torch.no_grad():
            x0 = generator.decode(self.w0, cond=codes)  # as one batch, like every later render
        for i, (_, _, image) in enumerate(starts):
            if image is not None:
                x0[i] = image[0]
        self.register_buffer("x0", x0)
        # 1 where a base image's pixels are kept outside the mask (it is not simply decode(w0))
        self.register_buffer(
            "keep", torch.tensor([float(x is not None) for *_, x in starts], device=dev).view(-1, 1, 1, 1)
        )
        start = generator.to_space(codes, self.space, self.w0)
        self.latents = nn.ParameterDict(  # [B * K, ...]: every region starts from its request's start
            {k: nn.Parameter(v.detach().repeat_interleave(self.regions, 0).clone()) for k, v in start.items()}
        )
        self.history: list[list[dict[str, float]]] = [[] for _ in requests]
        self.stopped: str | None = None  # why a callback stopped the edit early
        # each request's own random streams (CMA-ES samples, crops), seeded alike: a request edits the
        # same in any batch, alone or with others
        self._crop_gens = self._generators("cpu")  # the Adam phase's crops

    # ---- rendering --------------------------------------------------------------------------
    @property
    def codes(self) -> Codes:
        return {k: getattr(self, f"code_{k}") for k in self.code_keys}

    def decode_latents(
        self, latents: dict[str, torch.Tensor] | None = None, rep: int = 1
    ) -> tuple[torch.Tensor | list[torch.Tensor], Codes]:
        """The decode latent w and conditioning codes of edit latents (default: the current ones); with
        K regions, w is a list of K decode latents (one per region) and the codes are the first region's."""
        lat = dict(self.latents) if latents is None else latents
        k = self.regions
        codes = {n: v.repeat_interleave(rep * k, 0) for n, v in self.codes.items()}
        w, cond = self.generator.from_space(lat, self.space, codes)
        if k == 1:
            return w, cond
        w = w.view(-1, k, *w.shape[1:])
        return list(w.unbind(1)), {n: v[::k] for n, v in cond.items()}

    def render(self, latents: dict[str, torch.Tensor] | None = None, rep: int = 1) -> torch.Tensor:
        """Images from edit latents (default: the current ones); `rep` candidates per request."""
        w, cond = self.decode_latents(latents, rep)
        if not (self.masked and self.settings.mask_mode == "latent"):
            return self.generator.decode(w, cond=cond)
        mask = self.mask.repeat_interleave(rep, 0)
        x = self.generator.decode(w, self.w0.repeat_interleave(rep, 0), mask, cond=cond)
        if bool(self.keep.any()):  # a base image: its pixels outside the mask(s), the edit inside
            union = self.union.repeat_interleave(rep, 0)
            keep = self.keep.repeat_interleave(rep, 0) * (1 - resize_mask(union, x.shape[-1]))
            x = x * (1 - keep) + self.x0.repeat_interleave(rep, 0) * keep
        return x

    def objective(
        self,
        x: torch.Tensor,
        rep: int = 1,
        u: torch.Tensor | None = None,
        crops: int | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-image loss terms of images x ([B * rep, ...], request-major). With K regions, each image
        is seen K times, through each region's mask with its words (the same crops): `semantic` is the
        sum of the regions' losses, `semantic_score` their mean score, `semantic_score:k` region k's."""
        k = self.regions
        t, wt = self.semantic.targets(self.prompts)  # [B * K, ...]
        t, wt = (v.unflatten(0, (-1, k)).repeat_interleave(rep, 0).flatten(0, 1) for v in (t, wt))
        mask = self.mask.repeat_interleave(rep, 0)
        crops = self.settings.crops if crops is None else crops
        views = x.repeat_interleave(k, 0) if k > 1 else x
        u = u.repeat_interleave(k, 0) if u is not None and k > 1 else u
        view_mask = mask.flatten(0, 1).unsqueeze(1) if self.masked else None
        cos = self.semantic.similarity(views, view_mask, (t, wt), crops=crops, u=u, generator=generator)
        loss = self.semantic.loss_from_cos(cos, wt).view(-1, k)
        score = self.semantic.score_from_cos(cos, wt).view(-1, k)
        out = {"semantic": loss.sum(1), "semantic_score": score.mean(1)}
        if k > 1:
            out.update({f"semantic_score:{i + 1}": score[:, i] for i in range(k)})
        if self.masked:
            l1, lp = self.preservation(x, self.x0.repeat_interleave(rep, 0), self.union.repeat_interleave(rep, 0))
            out.update(preservation_l1=l1, preservation_lpips=lp)
            out["loss"] = out["semantic"] + self.settings.lam * (l1 + lp)
        else:
            out["loss"] = out["semantic"]
        return out

    @torch.no_grad()
    def realism(self, x: torch.Tensor) -> torch.Tensor | None:
        """The generator's discriminator score per image, for the current codes."""
        return self.generator.realism(x, self.decode_latents()[1])

    def _generators(self, device) -> list[torch.Generator]:
        """One random generator per request, each seeded with `settings.seed`."""
        return [torch.Generator(device=device).manual_seed(self.settings.seed) for _ in self.names]

    def _crop_uniforms(self, gens: list[torch.Generator], device) -> torch.Tensor | None:
        """Uniforms [B, K, 3] fixing each request's K random crops, drawn from its own generator."""
        k = self.settings.crops
        if k == 0:
            return None
        return torch.cat([torch.rand(1, k, 3, generator=g, device=g.device) for g in gens]).to(device)

    # ---- CMA-ES -----------------------------------------------------------------------------
    def _active(self) -> torch.Tensor:
        """[B, D] dims the CMA-ES searches (all K regions' latents of a request): spatial latents only
        where their region's mask is on."""
        b, parts = len(self.names), []
        for v in self.latents.values():
            if self.masked and self.settings.mask_mode == "latent" and v.ndim == 4:
                on = resize_mask(self.mask, v.shape[-1]) > 0  # [B, K, h, w]
                parts.append(on.unsqueeze(2).expand(-1, -1, v.shape[1], -1, -1).flatten(1))
            else:
                parts.append(torch.ones_like(v, dtype=torch.bool).reshape(b, -1))
        return torch.cat(parts, 1)

    def _flat(self) -> torch.Tensor:
        """[B, D]: each request's latents (all its regions') as one vector."""
        return torch.cat([v.detach().reshape(len(self.names), -1) for v in self.latents.values()], 1)

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[N, D] vectors (as `_flat`) -> latents [N * K, ...]."""
        out, i = {}, 0
        for k, v in self.latents.items():
            n = v[0].numel() * self.regions
            out[k] = flat[:, i : i + n].reshape(-1, *v.shape[1:])
            i += n
        return out

    @torch.no_grad()
    def run_cma(self, progress: bool = True) -> torch.Tensor:
        """The paper's CMA-ES phase: `generations` of `population` candidates per request, each
        generation evaluated as one batch through G and CLIP (all candidates of a request see the
        same random crops). A candidate holds all K regions' latents of its request (the search space is
        K times larger, the population stays `population`: each candidate is one image, seen K times by
        CLIP). Sets the latents to each request's best candidate; returns its loss [B]. Under a Trainer,
        callbacks see each generation (`on_cma_generation_end`) and may stop it."""
        s = self.settings
        b = len(self.names)
        flat0 = self._flat()
        gens = self._generators(flat0.device)
        es = SepCMAES(flat0, s.sigma0, s.population, self._active(), gens)
        chunk = s.population_chunk or s.population
        k = max(s.crops, 1)
        for g in tqdm(range(s.generations), desc="CMA-ES", disable=not progress, leave=False):
            pop = es.ask()  # [B, P, D]
            u = torch.cat([torch.rand(1, 1, k, 3, generator=gen, device=flat0.device) for gen in gens])
            fit = []
            for j in range(0, s.population, chunk):
                c = pop[:, j : j + chunk]
                n = c.shape[1]
                x = self.render(self._unflatten(c.flatten(0, 1)), rep=n)
                fit.append(self.objective(x, rep=n, u=u.expand(-1, n, -1, -1).flatten(0, 1))["loss"].view(b, n))
            es.tell(torch.cat(fit, 1))
            self._log_scalars(
                {"cma/best_loss": es.best_f.mean(), "cma/generation": g + 1, "cma/sigma": es.sigma.mean()}
            )
            if self._trainer is not None:
                for cb in self.trainer.callbacks:
                    if hasattr(cb, "on_cma_generation_end"):
                        cb.on_cma_generation_end(self.trainer, self, g + 1, s.generations)
                if self.trainer.should_stop:
                    break
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
        if self.settings.steps == 0:  # CMA-ES only
            self.trainer.should_stop = True

    def train_dataloader(self):
        return DataLoader(range(max(self.settings.steps, 1)), batch_size=1)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.latents.values(), lr=self.settings.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.settings.lr, total_steps=max(self.settings.steps, 1)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch, batch_idx):
        x = self.render()
        terms = self.objective(x, u=self._crop_uniforms(self._crop_gens, x.device))
        r = self.realism(x.detach())
        per_request = {k: v.detach() for k, v in terms.items()}
        if r is not None:
            per_request["realism"] = r
        self.log_dict({k: v.mean() for k, v in per_request.items()}, on_step=True, batch_size=len(self.names))
        for i, h in enumerate(self.history):
            h.append({k: float(v[i]) for k, v in per_request.items()})
        return terms["loss"].sum()

    def on_train_end(self) -> None:
        log_image = getattr(self.logger, "log_image", None)
        if log_image is None:
            return
        with torch.no_grad():
            edited = self.render()
        k = self.regions
        caps = [
            f"{n}: {' / '.join(' | '.join(p.texts) for p in self.prompts[i * k : (i + 1) * k])}"
            for i, n in enumerate(self.names)
        ]
        log_image("original", list(to01(self.x0)), caption=caps)
        log_image("mask_overlay", list(to01(mask_overlay(self.x0, self.union))), caption=caps)
        log_image("edited", list(to01(edited)), caption=caps)

    # ---- results ----------------------------------------------------------------------------
    @torch.no_grad()
    def final_metrics(self) -> list[dict[str, float]]:
        """Per request: loss terms, `semantic_score` (CLIP cosine of the whole masked view with the
        prompts) and `semantic_score_start` (the same of the unedited image), `realism` (when a
        discriminator exists), preservation L1/LPIPS."""
        x = self.render()
        terms = self.objective(x, u=self._crop_uniforms(self._generators("cpu"), x.device))
        view = self.objective(x, crops=0)
        start = self.objective(self.x0, crops=0)["semantic_score"]
        r = self.realism(x)
        out = []
        for i in range(len(self.names)):
            m = {k: float(v[i]) for k, v in terms.items() if not k.startswith("semantic_score")}
            m.update({k: float(v[i]) for k, v in view.items() if k.startswith("semantic_score")})
            m["semantic_score_start"] = float(start[i])
            if r is not None:
                m["realism"] = float(r[i])
            out.append(m)
        return out


def _check_regions(generator: MaskableGenerator, space: str, settings: EditSettings) -> None:
    """Refuse what several regions cannot do, naming the way out."""
    if settings.mask_mode != "latent":
        raise ValueError(
            "several regions need mask_mode 'latent' (each region's latent acts inside its own mask); "
            "mask_mode 'image' changes the whole latent, so the regions could not keep apart"
        )
    if generator.is_conditional and space != "w":
        raise ValueError(
            f"several regions in a {type(generator).__name__}'s space {space!r} would each bring their own "
            "conditioning codes; edit them in space 'w'"
        )


def _check_tuned_weights(generator: MaskableGenerator, requests: list[EditRequest]) -> None:
    """A base made with tuned generator weights (a photo projected with pivotal tuning) must be edited with them."""
    params = dict(generator.named_parameters())
    for r in requests:
        state = r.base.generator_state if r.base is not None else None
        if state and not all(
            k in params and torch.equal(params[k].detach(), v.to(params[k].device)) for k, v in state.items()
        ):
            raise ValueError(
                f"request {r.name or '(unnamed)'} starts from a photo projected with tuned generator "
                "weights: edit it through Editor (which applies them) or with base.tuned_generator(generator)"
            )


def _start(
    generator: MaskableGenerator, request: EditRequest, device
) -> tuple[Codes, torch.Tensor, torch.Tensor | None]:
    """A request's starting codes, decode latent w0 and (when a base keeps its pixels) image."""
    if request.base is not None:
        codes, w0, image = request.base.as_base()
    else:
        codes, image = request.codes, None
        with torch.no_grad():
            w0 = generator.encode({k: v.to(device) for k, v in codes.items()})
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    return {k: v.to(device) for k, v in codes.items()}, dev(w0), dev(image)
