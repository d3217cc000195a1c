"""Pieces every GAN trainer shares: atomic checkpoints, the pbw checkpoint entry, EMA, sample grids."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
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


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Make `trainer` save checkpoints atomically, unless it was given a custom CheckpointIO."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def pbw_checkpoint_entry(family: str, generator_kwargs: dict, discriminator_kwargs: dict) -> dict:
    """The top-level "pbw" entry that lets `pbw.checkpoints.load_generator` rebuild the networks."""
    return {"family": family, "generator": dict(generator_kwargs), "discriminator": dict(discriminator_kwargs),
            "format_version": CHECKPOINT_FORMAT_VERSION}


class GANModule(pl.LightningModule):
    """What every pbw GAN trainer shares (manual optimization).

    Subclasses build `generator`, `generator_ema`, `discriminator`, `metrics` (a GenerationMetrics
    or None) and the constructor kwargs `generator_kwargs` / `discriminator_kwargs`, set `family`,
    and implement `fakes_like(batch)` (EMA images matching a real batch) and `sample_grid()`.
    This base adds the image/iteration counters, the pbw checkpoint entry and the resume check,
    per-rank noise, training logs, FID/KID(/IS) at validation and the sample grid.
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

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:  # every rank was seeded alike: give each its own noise
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pbw"] = pbw_checkpoint_entry(self.family, self.generator_kwargs, self.discriminator_kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        entry = checkpoint.get("pbw", {})
        if entry.get("family", self.family) != self.family or entry.get("generator", self.generator_kwargs) != self.generator_kwargs:
            raise ValueError(
                f"checkpoint holds a {entry.get('family')} generator {entry.get('generator')}, but this run builds "
                f"{self.family} {self.generator_kwargs}; resume with the config the checkpoint was trained with")

    def log_training(self, logs: dict[str, torch.Tensor]) -> None:
        """Log a training step's values under train/ (losses also on the progress bar)."""
        logs["kimg"] = self.images_seen.float() / 1000
        self.log_dict({f"train/{k}": v.float() for k, v in logs.items()}, prog_bar=False, sync_dist=False)
        self.log_dict({"loss_d": logs["loss_d"], "loss_g": logs["loss_g"]}, prog_bar=True, logger=False)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.metrics is None or self.metrics.num_real >= self.hparams.num_metric_samples:
            return
        self.metrics.update(batch["image"], real=True)
        self.metrics.update(self.fakes_like(batch), real=False)

    def on_validation_epoch_end(self) -> None:
        if self.metrics is not None and self.metrics.num_real > 1:
            values = self.metrics.compute()
            self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=True, sync_dist=True)
            self.metrics.reset()
        with torch.no_grad():
            images, nrow = self.sample_grid()
        log_image_grid(self, "val/samples", images, nrow=nrow)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def ema_beta(batch_size: int, images_seen: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """StyleGAN's EMA decay per step: a half-life of `ema_kimg` thousand images, ramped up early in training."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, images_seen * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def log_image_grid(module: pl.LightningModule, key: str, images: torch.Tensor, nrow: int) -> Path | None:
    """Save a grid of images in [-1, 1] as PNG under the run's log folder and send it to the loggers.

    Returns the PNG path (None on non-zero ranks).
    """
    trainer = module.trainer
    if not trainer.is_global_zero:
        return None
    grid = torchvision.utils.make_grid(((images.detach().float().cpu() + 1) / 2).clamp(0, 1), nrow=nrow, padding=2)
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    path = log_dir / "samples" / f"{key.replace('/', '_')}_{trainer.global_step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(grid, path)
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
            logger.experiment.add_image(key, grid, trainer.global_step)
    return path
