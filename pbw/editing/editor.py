"""The editing core: `Editor(generator, semantic, preservation, device).run(requests, settings, callbacks)`.

Clients (pbw-edit, the app, the experiment runner, the benchmarks) parse their input into
`EditRequest`s, call `run`, and present the `EditResult`s. Progress, time limits and cancellation
are Lightning callbacks that also see the CMA-ES phase (`EditCallback.on_cma_generation_end`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar

from pbw.editing.losses import PreservationLoss
from pbw.editing.module import EditModule, EditRequest, EditSettings
from pbw.editing.result import EditResult, Layer, apply_generator_state
from pbw.models.maskable import Codes, MaskableGenerator
from pbw.semantic import SemanticNet


class EditCallback(pl.Callback):
    """A Lightning callback for edits: it also sees each CMA-ES generation."""

    def on_cma_generation_end(self, trainer: pl.Trainer, module: EditModule, done: int, total: int) -> None:
        """Called after CMA-ES generation `done` of `total`; setting `trainer.should_stop` ends the edit."""


class EditProgress(EditCallback):
    """Reports progress as `report(phase, done, total)`, phase "CMA-ES" or "Adam"."""

    def __init__(self, report: Callable[[str, int, int], None]):
        self.report = report

    def on_cma_generation_end(self, trainer, module, done, total):
        self.report("CMA-ES", done, total)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.report("Adam", batch_idx + 1, module.settings.steps)


class StopEdit(EditCallback):
    """Stops both phases of an edit once `reason()` gives a reason; the results keep what was reached
    and say why in their notes."""

    def reason(self) -> str | None:
        raise NotImplementedError

    def _check(self, trainer: pl.Trainer, module: EditModule) -> None:
        why = self.reason()
        if why:
            trainer.should_stop = True
            module.stopped = why

    def on_cma_generation_end(self, trainer, module, done, total):
        self._check(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._check(trainer, module)


class TimeLimit(StopEdit):
    """Stops each batch of edits `seconds` after it started."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.monotonic()

    def setup(self, trainer, pl_module, stage):
        self.start = time.monotonic()

    def reason(self):
        if time.monotonic() - self.start > self.seconds:
            return f"stopped early: the time limit of {self.seconds:g} s was reached"
        return None


class Cancel(StopEdit):
    """Stops the edit in progress once `cancel()` is called (from any thread)."""

    def __init__(self):
        self.event = threading.Event()

    def cancel(self) -> None:
        self.event.set()

    def reason(self):
        return "stopped early: cancelled" if self.event.is_set() else None


@dataclass
class _BatchRun:
    """What every batch of one `Editor.run` shares."""

    requests: Sequence[EditRequest]
    callbacks: Sequence[pl.Callback]
    keep_going: bool
    progress: bool
    logger: object
    done: set[int]
    on_batch_end: Callable | None
    out: list


def _halves(batch: list[int]) -> tuple[list[int], list[int]]:
    mid = (len(batch) + 1) // 2
    return batch[:mid], batch[mid:]


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` is the device running out of memory."""
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def one_line(e: BaseException) -> str:
    """An error as one line: its type and its message's first line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class EditFailure:
    """A request that could not be edited (only returned by `Editor.run(keep_going=True)`)."""

    name: str
    error: str


class AdamProgressBar(TQDMProgressBar):
    """Lightning's console bar for the edit's Adam steps, named so (not "Epoch 0") and without run numbers."""

    @property
    def train_description(self) -> str:
        return "Adam"

    def on_train_epoch_start(self, trainer, *args) -> None:
        self.train_progress_bar.reset(total=max(trainer.max_steps, 1))

    def get_metrics(self, trainer, pl_module) -> dict:
        return {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k != "v_num"}


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's tips, device lines, stop notices and deprecations kept off the console while an edit
    runs (its warnings, which may need the user, still show)."""
    lightning = logging.getLogger("pytorch_lightning")
    level = lightning.level
    lightning.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Lightning's own deprecations included
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # G and CLIP stay frozen
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            yield
    finally:
        lightning.setLevel(level)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else as torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Editor:
    """Runs edit requests on one generator with one semantic net and preservation loss.

    `info` (e.g. the checkpoint and CLIP names) is recorded in every result's settings."""

    def __init__(
        self,
        generator: MaskableGenerator,
        semantic: SemanticNet,
        preservation: PreservationLoss | None = None,
        device: str | torch.device = "auto",
        info: dict | None = None,
    ):
        self.device = resolve_device(device)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls (cuDNN convs already use TF32)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self.semantic = semantic.to(self.device).eval()
        self.preservation = (preservation or PreservationLoss(lpips=False)).to(self.device).eval()
        self.info = dict(info or {})
        self._tuned: tuple[dict, MaskableGenerator] | None = None  # the last tuned weights used, applied

    @torch.no_grad()
    def start(self, codes: Codes, name: str = "") -> EditResult:
        """The unedited image of `codes` (a history's first step)."""
        codes = {k: v.to(self.device) for k, v in codes.items()}
        w0 = self.generator.encode(codes)
        x = self.generator.decode(w0, cond=codes).cpu()
        return EditResult({k: v.cpu() for k, v in codes.items()}, w0.cpu(), x, x, name=name)

    def run(
        self,
        requests: Sequence[EditRequest],
        settings: EditSettings | None = None,
        callbacks: Sequence[pl.Callback] = (),
        keep_going: bool = False,
        progress: bool = True,
        logger=False,
        done: Collection[int] = (),
        on_batch_end: Callable[[list[int], list[EditResult | EditFailure]], None] | None = None,
    ) -> list[EditResult | EditFailure | None]:
        """Edit every request (in batches of `settings.batch_size`, masked and whole-image requests
        apart, requests with different numbers of regions apart, and requests whose base carries tuned generator weights, e.g. a photo projected with
        pivotal tuning, apart by those weights, which edit them); returns one result per request, in
        order.

        A batch that runs out of memory is split in halves (down to one request, then its CMA-ES
        population is evaluated in halving chunks); the results' notes say so. With `keep_going`, a
        batch that fails otherwise is split in halves too until the failing request is alone, which
        becomes an `EditFailure` instead of raising. `done`: indices of requests edited before (None in
        the returned list); the rest of their batch is edited in the halves a split would make, so each
        request is edited in the same company as in one uninterrupted run. `on_batch_end(indices,
        results)` is called as each group of requests finishes (e.g. to save them)."""
        settings = settings or EditSettings()
        out: list[EditResult | EditFailure | None] = [None] * len(requests)
        run = _BatchRun(requests, callbacks, keep_going, progress, logger, set(done), on_batch_end, out)
        shapes = sorted({(r.masked, len(r.all_regions)) for r in requests}, reverse=True)  # masked first
        for shape in shapes:
            todo = [i for i, r in enumerate(requests) if (r.masked, len(r.all_regions)) == shape]
            for key in dict.fromkeys(id(_tuned_state(requests[i])) for i in todo):
                group = [i for i in todo if id(_tuned_state(requests[i])) == key]
                for j in range(0, len(group), settings.batch_size):
                    self._run_batch(group[j : j + settings.batch_size], settings, run, [])
        return out

    def _run_batch(self, batch: list[int], settings: EditSettings, run: _BatchRun, notes: list[str]) -> None:
        if all(i in run.done for i in batch):
            return
        if any(i in run.done for i in batch):  # the rest, in the halves a split would make
            for half in _halves(batch):
                self._run_batch(half, settings, run, notes)
            return
        requests = [run.requests[i] for i in batch]
        results, error = None, ""
        chunk = settings.population_chunk or settings.population
        try:
            results = self._edit(requests, settings, run.callbacks, run.progress, run.logger)
        except Exception as e:
            oom = is_out_of_memory(e)
            split = len(batch) > 1 and (oom or run.keep_going)
            smaller_chunks = oom and chunk > 1 and settings.optimizer == "cma+adam" and settings.generations > 0
            if not (split or smaller_chunks or run.keep_going):
                raise
            error = one_line(e)
        if results is None:  # retried outside the except block, so the failed attempt's memory is free
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if split:
                why = f"out of memory in a batch of {len(batch)}: edited in smaller batches" if oom else None
                for half in _halves(batch):
                    self._run_batch(half, settings, run, notes + ([why] if why else []))
                return
            if smaller_chunks:
                half = (chunk + 1) // 2
                why = f"out of memory: the CMA-ES population evaluated in chunks of {half}"
                self._run_batch(batch, replace(settings, population_chunk=half), run, notes + [why])
                return
            results = [EditFailure(requests[0].name, error)]
        for r in results:
            if isinstance(r, EditResult):
                r.notes.extend(notes)
        for i, r in zip(batch, results, strict=True):
            run.out[i] = r
        if run.on_batch_end is not None:
            run.on_batch_end(list(batch), results)

    def generator_for(self, request: EditRequest) -> MaskableGenerator:
        """The generator that edits `request`: this Editor's, or a copy with its base's tuned weights."""
        state = _tuned_state(request)
        if state is None:
            return self.generator
        if self._tuned is None or self._tuned[0] is not state:
            self._tuned = (state, apply_generator_state(self.generator, state))
        return self._tuned[1]

    def _edit(
        self, requests: list[EditRequest], settings: EditSettings, callbacks, progress, logger
    ) -> list[EditResult]:
        module = EditModule(self.generator_for(requests[0]), self.semantic, requests, settings, self.preservation).to(
            self.device
        )
        with quiet_lightning():
            trainer = pl.Trainer(
                max_steps=max(settings.steps, 1),
                accelerator="gpu" if self.device.type == "cuda" else "cpu",
                devices=1,
                logger=logger,
                callbacks=list(callbacks) + ([AdamProgressBar()] if progress else []),
                enable_checkpointing=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                log_every_n_steps=1,
                enable_progress_bar=progress,
            )
            trainer.fit(module)
        return self._results(module, requests)

    @torch.no_grad()
    def _results(self, module: EditModule, requests: list[EditRequest]) -> list[EditResult]:
        edited = module.render().cpu()
        metrics = module.final_metrics()
        w_edit, cond = module.decode_latents()
        layered = module.masked and module.settings.mask_mode == "latent"
        settings = {**asdict(module.settings), "space": module.space, **self.info}
        results = []
        k = module.regions
        for i, req in enumerate(requests):
            one = lambda d, n=1, i=i: {key: v[i * n : (i + 1) * n].detach().cpu() for key, v in d.items()}  # noqa: E731
            latents = one(module.latents, k)  # [K, ...]: one latent per region
            mask = module.union[i : i + 1].cpu() if module.masked else None
            if layered:  # this edit is a layer over its start
                codes, w0 = one(module.codes), module.w0[i : i + 1].cpu()
                region_masks = module.mask[i : i + 1].cpu()  # [1, K, R, R]
                layers = (req.base.layers if req.base else []) + [Layer(module.space, latents, region_masks)]
                source = req.base.source if req.base else "sample"
            else:  # the whole latent changed: the edited image is a new start
                codes, w0, layers, source = one(cond), w_edit[i : i + 1].cpu(), [], "sample"
            notes = list(req.notes) + ([module.stopped] if module.stopped else [])
            results.append(
                EditResult(
                    codes=codes,
                    w0=w0,
                    original=module.x0[i : i + 1].cpu(),
                    edited=edited[i : i + 1],
                    name=req.name,
                    prompt=_prompt_dict(*(g.prompt for g in req.all_regions)),
                    regions=[
                        {"prompt": _prompt_dict(g.prompt), "mask": module.mask[i : i + 1, j : j + 1].cpu()}
                        for j, g in enumerate(req.all_regions)
                    ]
                    if k > 1
                    else [],
                    space=module.space,
                    latents=latents,
                    mask=mask,
                    layers=layers,
                    source=source,
                    metrics=metrics[i],
                    settings=settings,
                    history=module.history[i],
                    notes=notes,
                    generator_state=_tuned_state(req),
                )
            )
        return results


def _prompt_dict(*prompts) -> dict:
    """A result's prompt: the words of its region(s), all together."""
    return {"texts": [t for p in prompts for t in p.texts], "weights": [w for p in prompts for w in p.weights]}


def _tuned_state(request: EditRequest) -> dict | None:
    return request.base.generator_state if request.base is not None else None
