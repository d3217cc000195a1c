"""Callbacks the training tests inject through the CLI (`--trainer.callbacks+=training_probes.X`)."""
import os
import subprocess
import sys
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


def run_two_rank_ddp(fit_args: list[str], tmp_path: Path) -> dict[str, torch.Tensor]:
    """Run `train.py` on 2 CPU processes (gloo), assert both ranks end with identical state, return rank 0's."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PBW_PROBE_DIR=str(tmp_path / "probe"), PYTHONPATH=f"{repo}:{repo / 'tests'}",
               WANDB_MODE="disabled")
    cmd = [sys.executable, str(repo / "train.py"), *fit_args, "--trainer.devices", "2",
           "--trainer.strategy", "ddp_find_unused_parameters_true", "--trainer.limit_val_batches", "0",
           "--trainer.callbacks+=training_probes.SaveRankWeights"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "probe/rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "probe/rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ in {key}"
    return rank0
