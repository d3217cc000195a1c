"""Command-line entry points built on LightningCLI (train.py is a thin wrapper around `train_main`)."""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

from pbw.training.common import use_atomic_checkpoints


class PbwCLI(LightningCLI):
    """LightningCLI over any pbw LightningModule and DataModule (chosen by `class_path` in the YAML).

    Every trainer it builds writes checkpoints atomically. Subcommands: fit, validate, test, predict.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
                         subclass_mode_data=True, **kwargs)

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        return trainer


def train_main(args: list[str] | None = None) -> PbwCLI:
    """`python train.py fit --config configs/stylegan2/cub256.yaml [--data.root DIR] ...`"""
    return PbwCLI(args=args)
