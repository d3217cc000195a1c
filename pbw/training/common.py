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


def check_resume_architecture(checkpoint: dict[str, Any], family: str, generator_kwargs: dict) -> None:
    """Raise a clear error when a checkpoint's generator is not the one this run builds."""
    entry = checkpoint.get("pbw", {})
    if entry.get("family", family) != family or entry.get("generator", generator_kwargs) != generator_kwargs:
        raise ValueError(
            f"checkpoint holds a {entry.get('family')} generator {entry.get('generator')}, but this run builds "
            f"{family} {generator_kwargs}; resume with the config the checkpoint was trained with")


def seed_noise_per_rank(module: pl.LightningModule) -> None:
    """Every rank was seeded alike; give each its own noise so the ranks' fakes differ."""
    if module.trainer.world_size > 1:
        torch.manual_seed(torch.initial_seed() + module.global_rank)


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
