"""Callbacks the training tests inject through the CLI (`--trainer.callbacks+=training_probes.X`)."""
import os
from pathlib import Path

import pytorch_lightning as pl
import torch


class SaveRankWeights(pl.Callback):
    """At the end of training, each rank saves its generator/discriminator weights to $PBW_PROBE_DIR."""

    def on_train_end(self, trainer, pl_module):
        out = Path(os.environ["PBW_PROBE_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items() if not k.startswith("metrics")}
        torch.save(state, out / f"rank{trainer.global_rank}.pt")
