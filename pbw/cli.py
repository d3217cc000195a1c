"""Command-line entry points built on LightningCLI (pbw-train, and the train.py script of a checkout)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint, Timer
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities import rank_zero_only

from pbw.configs import resolve_config_args
from pbw.training.common import (
    AtomicCheckpointIO,
    LoggerVersions,
    PerRunTimer,
    newest_checkpoint,
    use_atomic_checkpoints,
)

LIGHTNING_CSV_LOGGERS = {
    "pytorch_lightning.loggers.CSVLogger",
    "pytorch_lightning.loggers.csv_logs.CSVLogger",
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.loggers.csv_logs.CSVLogger",
}
CONTINUED_CSV_LOGGER = "pbw.training.common.ContinuedCSVLogger"


class PbwCLI(LightningCLI):
    """LightningCLI over any pbw LightningModule and DataModule (chosen by `class_path` in the YAML).

    A `fit` run keeps its checkpoints in `<trainer.default_root_dir>/checkpoints` (for every
    ModelCheckpoint without a `dirpath`), written atomically; `--ckpt_path last` continues it from
    the newest readable one, logging to the same logger version / W&B run. Lightning's CSVLogger is
    run as pbw's `ContinuedCSVLogger` (Lightning's would delete the version's metrics.csv on resuming),
    and `trainer.max_time` limits each run of the command, a resumed one included (`PerRunTimer`).
    Subcommands: fit, validate, test, predict.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, **kwargs
        )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") == "fit":
            self._resume_or_start(self.config.fit)

    def _resume_or_start(self, config: Namespace) -> None:
        """Clean up after an interrupted save; resolve `ckpt_path: last` to a file and the loggers'
        versions stored in it; refuse to start a new run over a run that has checkpoints."""
        folder = checkpoint_folder(config.trainer.default_root_dir)
        if removed := AtomicCheckpointIO.remove_partial_saves(folder):
            tell(f"removed {len(removed)} temporary file(s) of an interrupted checkpoint save in {folder}")
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
        loggers = [logger for logger in loggers if isinstance(logger, Namespace)]
        for logger in loggers:
            if logger.class_path in LIGHTNING_CSV_LOGGERS:
                logger.class_path = CONTINUED_CSV_LOGGER
        if config.ckpt_path == "last":
            found = newest_checkpoint(folder)
            if found is None:
                tell(f"no checkpoint in {folder} yet: starting the run from step 0")
                config.ckpt_path = None
                return
            path, checkpoint = found
            config.ckpt_path = str(path)
            versions = checkpoint.get("logger_versions", {})
            for logger in loggers:
                name = logger.class_path.rsplit(".", 1)[-1]
                version = versions.get(name, versions.get("CSVLogger") if name == "ContinuedCSVLogger" else None)
                if version is not None:
                    logger.init_args.version = version
        elif config.ckpt_path is None and any(folder.glob("*.ckpt")):
            tell(
                f"{folder} holds an earlier run's checkpoints; continue it with --ckpt_path last "
                "or give this run its own --trainer.default_root_dir"
            )
            raise SystemExit(2)

    def _parse_ckpt_path(self) -> None:
        """`fit` resumes with this run's model settings and says which differ from the checkpoint's.
        Lightning's CLI would replace them with those stored in the checkpoint, silently dropping a changed
        `--model.init_args.r1_gamma`; a different architecture is still refused (`GANModule`)."""
        if self.config.get("subcommand") != "fit":
            return super()._parse_ckpt_path()
        path, model = self.config.fit.get("ckpt_path"), self.config.fit.get("model")
        if not path or not Path(path).is_file() or not isinstance(model, Namespace) or "init_args" not in model:
            return
        saved = torch.load(path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        plain = (bool, int, float, str, list, tuple)
        changed = [
            f"{key} {saved[key]} -> {value}"
            for key, value in model.init_args.as_dict().items()
            if isinstance(value, plain)
            and isinstance(saved.get(key), plain)
            and _as_list(saved[key]) != _as_list(value)
        ]
        if changed:
            tell(f"resuming with model settings changed from the checkpoint's: {', '.join(changed)}")

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        folder = os.path.realpath(checkpoint_folder(trainer.default_root_dir))
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = folder
        trainer.callbacks.append(LoggerVersions())
        subcommand = self.config.get("subcommand")
        max_time = (self.config[subcommand] if subcommand else self.config).trainer.max_time
        trainer.callbacks = [
            PerRunTimer(max_time) if type(callback) is Timer else callback for callback in trainer.callbacks
        ]
        return trainer


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@rank_zero_only
def tell(message: str) -> None:
    """One line on stderr, from the first process only."""
    print(f"pbw-train: {message}", file=sys.stderr)


def checkpoint_folder(default_root_dir: str | None) -> Path:
    """Where a run keeps its checkpoints, whatever its logger: `<default_root_dir>/checkpoints`."""
    return Path(default_root_dir or os.getcwd()) / "checkpoints"


def train_main(args: list[str] | None = None) -> PbwCLI:
    """`pbw-train fit --config stylegan2/cub256.yaml [--data.root DIR] ...` (a shipped config's name or a path)."""
    if args is None:  # LightningCLI reads sys.argv itself (and warns when given both)
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
    else:
        args = resolve_config_args(args)
    return PbwCLI(args=args)


def console_main() -> None:
    """The `pbw-train` console script: `train_main` without its return value (a console script exits with it)."""
    train_main()
