"""Callbacks the training tests inject through the CLI (`--trainer.callbacks+=training_probes.X`)."""

import hashlib
import io
import json
import os
import subprocess
import sys
import time
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
    env = dict(
        os.environ, PBW_PROBE_DIR=str(tmp_path / "probe"), PYTHONPATH=f"{repo}:{repo / 'tests'}", WANDB_MODE="disabled"
    )
    cmd = [
        sys.executable,
        str(repo / "train.py"),
        *fit_args,
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp_find_unused_parameters_true",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.callbacks+=training_probes.SaveRankWeights",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "probe/rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "probe/rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ in {key}"
    return rank0


class StepLog(pl.Callback):
    """Appends JSON lines to $PBW_PROBE_DIR/steps.jsonl: at the start of training the state it starts
    from ("start"), after each training step the state it reached and a hash of the step's batch ("step").

    With $PBW_PROBE_HANG_AT_SAVE=n, the process's n-th checkpoint write stops half-way: it writes half the
    file, touches $PBW_PROBE_DIR/saving and sleeps, so that a test can kill it during a save.
    """

    def setup(self, trainer, pl_module, stage):
        self.out = Path(os.environ["PBW_PROBE_DIR"])
        self.out.mkdir(parents=True, exist_ok=True)
        if "PBW_PROBE_HANG_AT_SAVE" in os.environ:
            self._hang_at_save(int(os.environ["PBW_PROBE_HANG_AT_SAVE"]))

    def _hang_at_save(self, n: int) -> None:
        real_save, saves = torch.save, []

        def save(obj, f, *args, **kwargs):
            saves.append(f)
            if len(saves) < n:
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            (self.out / "saving").touch()
            time.sleep(600)

        torch.save = save

    def _write(self, kind: str, pl_module, **extra) -> None:
        state = fingerprint(training_state(pl_module))
        with open(self.out / "steps.jsonl", "a") as f:
            f.write(json.dumps({"kind": kind, "pid": os.getpid(), **state, **extra}) + "\n")

    def on_train_start(self, trainer, pl_module):
        self._write("start", pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Which images, in which order: blind to the random flips (drawn from the global RNG, not checkpointed).
        images = batch["image"].cpu()
        digest = hashlib.sha1(torch.minimum(images, images.flip(-1)).numpy().tobytes()).hexdigest()
        self._write("step", pl_module, batch=digest, epoch=trainer.current_epoch)


def fingerprint(state: dict[str, torch.Tensor]) -> dict[str, float | str]:
    """Scalars as numbers, other tensors as a hash of their bytes (exact, unlike a sum's rounding)."""
    return {
        k: v.item() if v.numel() == 1 else hashlib.sha1(v.detach().cpu().numpy().tobytes()).hexdigest()
        for k, v in state.items()
    }


def training_state(module) -> dict[str, torch.Tensor]:
    """What a resumed StyleGAN2 run must continue: counters, EMA of G, ADA p, path-length mean, G and D."""
    return {
        "iteration": module.iteration,
        "images_seen": module.images_seen,
        "ada_p": module.augment_pipe.p,
        "pl_mean": module.pl_mean,
        "w_avg": module.generator.mapping.w_avg,
        "generator_ema": torch.cat([p.detach().flatten() for p in module.generator_ema.parameters()]),
        "generator": torch.cat([p.detach().flatten() for p in module.generator.parameters()]),
        "discriminator": torch.cat([p.detach().flatten() for p in module.discriminator.parameters()]),
    }
