"""Pieces every trainer shares: resumable runs (atomic checkpoints, the newest readable checkpoint,
continued logs), the pbw checkpoint entry, EMA, sample grids."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn

CHECKPOINT_FORMAT_VERSION = 1


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    A crash while saving leaves the previous checkpoint intact (Lightning's default writes in place).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def remove_partial_saves(folder: str | Path) -> list[Path]:
        """Delete the temporary files that a process killed while saving left in `folder`; return them."""
        leftovers = sorted(Path(folder).glob(".*.ckpt.*.tmp"))
        for path in leftovers:
            path.unlink(missing_ok=True)  # under DDP every rank cleans up
        return leftovers


def newest_checkpoint(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in `folder` that loads, with its contents (tensors memory-mapped), or None.

    Unreadable (truncated, corrupt) newer files are skipped with a warning naming them and the one used.
    """
    # A link (last.ckpt) before its target: Lightning keeps the file a run resumed from, which would leak.
    candidates = sorted(
        (p for p in Path(folder).glob("*.ckpt") if p.exists()),  # not a dangling link
        key=lambda p: (p.stat().st_mtime, p.is_symlink()),
        reverse=True,
    )
    unreadable = []
    for path in candidates:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # whatever the failure, the file is unusable
            unreadable.append(f"{path.name} ({type(err).__name__}: {str(err).splitlines()[0]})")
            continue
        if unreadable:
            rank_zero_warn(
                f"skipping unreadable checkpoint(s) {', '.join(unreadable)} in {folder}; "
                f"resuming from the newest readable one, {path.name}"
            )
        return path, checkpoint
    if unreadable:
        raise RuntimeError(f"no checkpoint in {folder} can be read: {', '.join(unreadable)}")
    return None


class LoggerVersions(pl.Callback):
    """Stores each logger's version (CSV/TensorBoard version, W&B run id) by class name in every
    checkpoint, so that `--ckpt_path last` logs to the same version folder / W&B run."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["logger_versions"] = {type(logger).__name__: logger.version for logger in trainer.loggers}


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run logging to a version folder that already holds
    metrics.csv keeps its rows up to the step where the new ones begin (Lightning's deletes the file)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(log_dir=self.log_dir)
        return self._experiment


class PerRunTimer(Timer):
    """Lightning's Timer (what `trainer.max_time` makes), except that the limit holds for each run of the
    command: a run resumed with `--ckpt_path last` gets the whole `max_time` again. Lightning's own
    restores the time spent before the checkpoint, so a resumed run whose earlier runs had used up
    `max_time` stopped at once, without training a step."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The time spent before the checkpoint does not count against this run."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        remaining = self.time_remaining()
        if remaining is not None and remaining <= 0:
            rank_zero_info(
                f"Stopped by max_time at step {trainer.global_step}; go on with the same command and --ckpt_path last"
            )


class _ContinuedWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # called by __init__, where Lightning deletes metrics.csv
        self._earlier_rows = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self._earlier_rows = list(csv.DictReader(f))

    def save(self) -> None:
        if self._earlier_rows is not None and self.metrics:
            first_step = min(m["step"] for m in self.metrics)  # the killed run logged from here on again
            kept = [r for r in self._earlier_rows if float(r["step"]) < first_step]
            self.metrics_keys = sorted(set().union(*kept, *self.metrics))
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._earlier_rows = None
        super().save()


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Make `trainer` save checkpoints atomically, unless it was given a custom CheckpointIO."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def pbw_checkpoint_entry(family: str, generator_kwargs: dict, discriminator_kwargs: dict) -> dict:
    """The top-level "pbw" entry that lets `pbw.checkpoints.load_generator` rebuild the networks."""
    return {
        "family": family,
        "generator": dict(generator_kwargs),
        "discriminator": dict(discriminator_kwargs),
        "format_version": CHECKPOINT_FORMAT_VERSION,
    }


class GANModule(pl.LightningModule):
    """What every pbw GAN trainer shares (manual optimization).

    Subclasses build `generator`, `generator_ema`, `discriminator`, `metrics` (a GenerationMetrics
    or None) and the constructor kwargs `generator_kwargs` / `discriminator_kwargs`, set `family`,
    and implement `fakes_like(batch)` (EMA images matching a real batch) and `sample_grid()`.
    This base adds the image/iteration counters, the pbw checkpoint entry and the resume check,
    per-rank noise, training logs, FID/KID(/IS) at validation and the sample grid.

    Several devices: each iteration trains D, then G, so each backward leaves the other network's
    parameters without gradients, which plain DDP refuses. Under a DDP strategy that does not say
    otherwise, `setup` turns on DDP's `find_unused_parameters` (what `--trainer.strategy
    ddp_find_unused_parameters_true` does), so `--trainer.devices N` works with the configs as shipped.
    Validation gathers the metric features of every rank and computes FID/KID/IS once on all of them.
    """

    family: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.register_buffer("images_seen", torch.zeros([], dtype=torch.long))
        self.register_buffer("iteration", torch.zeros([], dtype=torch.long))

    def fakes_like(self, batch: dict[str, Any]) -> torch.Tensor:
        """Generated images (EMA generator) for a real validation batch."""
        raise NotImplementedError

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        """The fixed-code sample grid logged each validation: (images, images per row)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        # Runs before the strategy wraps the module in DistributedDataParallel (which reads these kwargs).
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and "find_unused_parameters" not in strategy._ddp_kwargs:
            strategy._ddp_kwargs["find_unused_parameters"] = True

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:  # every rank was seeded alike: give each its own noise
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_train_start(self) -> None:
        # Python copies of the counters (read once, after a resume restored them): a training step that
        # read the buffers would wait for the GPU.
        self._iterations, self._images = int(self.iteration), int(self.images_seen)

    def count_iteration(self, images: int) -> None:
        """One iteration of `images` images (all ranks together) is done: advance the counters."""
        self.iteration += 1
        self.images_seen += images
        self._iterations += 1
        self._images += images

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pbw"] = pbw_checkpoint_entry(self.family, self.generator_kwargs, self.discriminator_kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        entry = checkpoint.get("pbw", {})
        if (
            entry.get("family", self.family) != self.family
            or entry.get("generator", self.generator_kwargs) != self.generator_kwargs
        ):
            raise ValueError(
                f"checkpoint holds a {entry.get('family')} generator {entry.get('generator')}, but this run builds "
                f"{self.family} {self.generator_kwargs}; resume with the config the checkpoint was trained with"
            )
        self._use_configured_optimizer_settings(checkpoint)

    def _use_configured_optimizer_settings(self, checkpoint: dict[str, Any]) -> None:
        """Resume keeps Adam's moments but takes lr and betas from this run's config: torch's
        `load_state_dict` would restore the checkpoint's, silently ignoring a changed `--model.g_lr`."""
        configured = self.configure_optimizers()
        for optimizer, saved in zip(configured, checkpoint.get("optimizer_states", []), strict=False):
            for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
                for key in ("lr", "betas"):
                    if key in saved_group and saved_group[key] != group[key]:
                        rank_zero_info(
                            f"resuming with the configured {key} {group[key]} (the checkpoint's "
                            f"optimizer had {saved_group[key]})"
                        )
                        saved_group[key] = group[key]

    def log_training(self, logs: dict[str, torch.Tensor]) -> None:
        """Log a training step's values under train/ (losses also on the progress bar)."""
        logs["kimg"] = self.images_seen.float() / 1000
        self.log_dict({f"train/{k}": v.float() for k, v in logs.items()}, prog_bar=False, sync_dist=False)
        self.log_dict({"loss_d": logs["loss_d"], "loss_g": logs["loss_g"]}, prog_bar=True, logger=False)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        per_rank = math.ceil(self.hparams.num_metric_samples / self.trainer.world_size)
        if self.metrics is None or self.metrics.num_real >= per_rank:
            return
        self.metrics.update(batch["image"], real=True)
        self.metrics.update(self.fakes_like(batch), real=False)

    def on_validation_epoch_end(self) -> None:
        # Every rank takes part: the metrics gather their features across ranks, and every rank needs
        # the values (a checkpoint callback monitoring val/fid runs on all of them).
        if self.metrics is not None and self.metrics.counts()[0] > 1:
            values = self.metrics.compute()
            self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=True)  # equal on every rank
            self.metrics.reset()
        with torch.no_grad():
            images, nrow = self.sample_grid()
        log_image_grid(self, "val/samples", images, nrow=nrow)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def ema_beta(batch_size: int, images_seen: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """StyleGAN's EMA decay per step: a half-life of `ema_kimg` thousand images, ramped up early in training."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, images_seen * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def log_image_grid(module: pl.LightningModule, key: str, images: torch.Tensor, nrow: int) -> Path | None:
    """Save a grid of images in [-1, 1] as PNG under the run's log folder and send it to the loggers.

    Returns the PNG path (None on non-zero ranks). Call it on every rank: `trainer.log_dir` broadcasts.
    """
    trainer = module.trainer
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective: before the rank check
    if not trainer.is_global_zero:
        return None
    grid = torchvision.utils.make_grid(((images.detach().float().cpu() + 1) / 2).clamp(0, 1), nrow=nrow, padding=2)
    path = log_dir / "samples" / f"{key.replace('/', '_')}_{trainer.global_step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(grid, path)
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
            logger.experiment.add_image(key, grid, trainer.global_step)
    return path
