"""Callbacks the training tests inject through the CLI (`--trainer.callbacks+=training_probes.X`)."""

import hashlib
import io
import json
import math
import os
import signal
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


class SaveMetricInputs(pl.Callback):
    """Each rank saves, at every metrics computation, the batches of images it gave the metrics and the
    values that came back, to $PBW_PROBE_DIR/metrics_rank{R}_{N}.pt."""

    def setup(self, trainer, pl_module, stage):
        out, rank, metrics = Path(os.environ["PBW_PROBE_DIR"]), trainer.global_rank, pl_module.metrics
        out.mkdir(parents=True, exist_ok=True)
        inputs, update, compute, calls = {True: [], False: []}, metrics.update, metrics.compute, []

        def recording_update(images, real):
            inputs[real].append(images.detach().float().cpu())
            update(images, real)

        def recording_compute(*args, **kwargs):
            values = compute(*args, **kwargs)
            record = {"real": list(inputs[True]), "fake": list(inputs[False]), "values": values}
            torch.save(record, out / f"metrics_rank{rank}_{len(calls)}.pt")
            calls.append(values)
            inputs[True].clear(), inputs[False].clear()
            return values

        metrics.update, metrics.compute = recording_update, recording_compute


def run_two_rank_ddp(fit_args: list[str], tmp_path: Path, validate: bool = False) -> dict[str, torch.Tensor]:
    """Run `train.py` on 2 CPU processes (gloo) with the config's own strategy, assert both ranks end with
    identical state, return rank 0's. Validation is off unless `validate` (then `SaveMetricInputs` records)."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ, PBW_PROBE_DIR=str(tmp_path / "probe"), PYTHONPATH=f"{repo}:{repo / 'tests'}", WANDB_MODE="disabled"
    )
    probes = ["--trainer.callbacks+=training_probes.SaveRankWeights"]
    if validate:
        probes += ["--trainer.callbacks+=training_probes.SaveMetricInputs", "--trainer.num_sanity_val_steps", "0"]
    else:
        probes += ["--trainer.limit_val_batches", "0"]
    cmd = [sys.executable, str(repo / "train.py"), *fit_args, "--trainer.devices", "2", *probes]
    # Its own process group: a collective called on one rank only hangs both ranks, and a timeout must
    # end the rank that Lightning launched too, not only the one started here.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise AssertionError(f"2-process training did not finish in 240 s (a hang?): {stderr[-2000:]}") from None
    assert proc.returncode == 0, stderr[-3000:]
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


def assert_metrics_equal_one_process(probe: Path, **metric_kwargs) -> dict[str, float]:
    """The last metrics computation of a 2-rank run (`SaveMetricInputs`) gave the same values on both ranks,
    and FID and KID equal those that one process computes from all the images both ranks fed in (IS
    depends on the order of the gathered features, see `GenerationMetrics`); returns the one-process values."""
    from pbw.metrics import GenerationMetrics, RandomConvFeatures

    last = max(int(p.stem.rsplit("_", 1)[1]) for p in probe.glob("metrics_rank0_*.pt"))
    ranks = [torch.load(probe / f"metrics_rank{r}_{last}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["values"] == ranks[1]["values"]
    assert all(len(r["real"]) > 0 for r in ranks)  # both ranks contributed
    one = GenerationMetrics(RandomConvFeatures(num_features=16), **metric_kwargs)
    for r in ranks:  # in the batches each rank had: a feature's rounding depends on the batch it was in
        for real, fake in zip(r["real"], r["fake"], strict=True):
            one.update(real, real=True)
            one.update(fake, real=False)
    expected = one.compute()
    assert expected.keys() == ranks[0]["values"].keys()
    for key, value in expected.items():
        if key == "is":
            continue
        assert math.isclose(ranks[0]["values"][key], value, rel_tol=1e-5, abs_tol=1e-7), (key, ranks[0]["values"])
    return expected
