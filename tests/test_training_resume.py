"""A killed training continues with the README's resume command (`--ckpt_path last`): SIGKILLs at random
steps and during a checkpoint save, a corrupt newest checkpoint, fresh starts, the continued CSV log
(the W&B and DDP resumes are in test_stylegan2_training.py)."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures_data import write_tiny_cub
from training_probes import fingerprint, training_state

from pbw.cli import train_main
from pbw.training.common import newest_checkpoint
from pbw.training.stylegan2 import StyleGAN2Module

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "pbw/configs/stylegan2/tiny.yaml")
ITERATIONS = 12  # 24 optimizer steps; a checkpoint every 2 iterations, 3 batches an epoch


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return write_tiny_cub(tmp_path_factory.mktemp("cub"), n_classes=3, per_class=4)


def fit_args(cub, out, *extra):
    return [
        "fit",
        "--config",
        TINY,
        "--data.root",
        str(cub),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def records(probe: Path, kind: str, pid: int | None = None) -> list[dict]:
    path = probe / "steps.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []  # complete lines only
    rows = [json.loads(line) for line in lines]
    return [r for r in rows if r["kind"] == kind and pid in (None, r["pid"])]


def run_until(command, env, log: Path, done) -> subprocess.Popen:
    """Start `command`; SIGKILL it as soon as `done(pid)` holds (polled); return the finished process."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 120
        while not done(proc.pid):
            assert proc.poll() is None, f"the run ended before it was killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "timed out waiting for the kill point"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc


def checkpoint_state(path: Path) -> dict[str, float | str]:
    """training_state() of the module stored in a checkpoint, as the probe writes it."""
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    module = StyleGAN2Module(**{**hparams, "num_metric_samples": 0})
    module.load_state_dict(ckpt["state_dict"], strict=False)
    return fingerprint(training_state(module))


def resume_point(folder: Path) -> tuple[int, dict[str, float | str]]:
    """The iteration and state of the checkpoint with the most iterations among those that load (the
    test's own oracle for where a restart must continue)."""
    found = []
    for path in folder.glob("*.ckpt"):
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
            found.append((int(state["iteration"]), path))
        except Exception:
            continue
    iteration, path = max(found)
    return iteration, checkpoint_state(path)


def test_a_killed_run_continues_with_the_readme_resume_command(cub, tmp_path):
    rng = random.Random(15)
    out, probe, folder = tmp_path / "run", tmp_path / "probe", tmp_path / "run" / "checkpoints"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        *fit_args(
            cub,
            out,
            "--trainer.max_steps",
            str(2 * ITERATIONS),
            "--trainer.limit_val_batches",
            "0",
            "--trainer.callbacks+=training_probes.StepLog",
        ),
    ]
    resume = [*command, "--ckpt_path", "last"]  # the README: the run's command plus --ckpt_path last
    env = dict(
        os.environ,
        PBW_PROBE_DIR=str(probe),
        PYTHONPATH=f"{REPO}:{REPO / 'tests'}",
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
    )

    def reached(pid, n):
        return any(r["iteration"] >= n for r in records(probe, "step", pid))

    launches = []  # (pid, the iteration it must start from, the state it must start from)

    # 1: the first command, killed at a random step after the first checkpoints
    kill_at = rng.randint(3, 5)
    launches.append((run_until(command, env, tmp_path / "1.log", lambda pid: reached(pid, kill_at)).pid, 0, None))
    # 2: resumed, killed while writing its second checkpoint file
    start, state = resume_point(folder)
    proc = run_until(
        resume, dict(env, PBW_PROBE_HANG_AT_SAVE="2"), tmp_path / "2.log", lambda pid: (probe / "saving").exists()
    )
    launches.append((proc.pid, start, state))
    assert list(folder.glob(".*.tmp")), "the kill during the save left its temporary file"
    # 3: resumed, killed at a random step
    start, state = resume_point(folder)
    kill_at = start + rng.randint(1, 3)
    launches.append((run_until(resume, env, tmp_path / "3.log", lambda pid: reached(pid, kill_at)).pid, start, state))
    # 4: the newest checkpoint is truncated; resumed from the previous good one, to the end
    newest = max((p for p in folder.glob("*.ckpt") if not p.is_symlink()), key=lambda p: p.stat().st_mtime)
    newest.write_bytes(newest.read_bytes()[:1000])
    start, state = resume_point(folder)
    with open(tmp_path / "4.log", "w") as log:
        final = subprocess.Popen(resume, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        assert final.wait(timeout=300) == 0, (tmp_path / "4.log").read_text()[-3000:]
    launches.append((final.pid, start, state))

    assert "removed 1 temporary file(s) of an interrupted checkpoint save" in (tmp_path / "3.log").read_text()
    assert not list(folder.glob(".*.tmp"))
    output = (tmp_path / "4.log").read_text()
    (warning,) = [line for line in output.splitlines() if "UserWarning: skipping unreadable checkpoint(s)" in line]
    assert newest.name in warning and "resuming from the newest readable one, " in warning

    steps = records(probe, "step")
    for k, (pid, start, state) in enumerate(launches):
        (first,) = records(probe, "start", pid)
        assert first["iteration"] == start and (k == 0 or start > 0), (k, first["iteration"], start)
        if k:
            # It starts from the checkpoint's state, which a killed process had reached at that step:
            # counters, EMA of G, ADA p, path-length mean, w_avg, G and D continue exactly.
            assert {key: first[key] for key in state} == state
            assert state in [{key: r[key] for key in state} for r in steps if r["iteration"] == start]
            furthest = max(r["iteration"] for r in steps if r["pid"] == launches[k - 1][0])
            assert start <= furthest, "a step would be skipped"
    # Steps trained again after a resume saw the batches the killed process had (the data order continues).
    by_iteration = {}
    for r in steps:
        by_iteration.setdefault(r["iteration"], set()).add(r["batch"])
    assert all(len(batches) == 1 for batches in by_iteration.values()), by_iteration
    assert sorted(by_iteration) == list(range(1, ITERATIONS + 1))
    last = [r for r in steps if r["pid"] == final.pid]
    assert last[-1]["iteration"] == ITERATIONS and last[-1]["images_seen"] == ITERATIONS * 4
    assert [p.name for p in (out / "lightning_logs").iterdir()] == ["version_0"]  # one run, one log folder
    # Retention held through the kills: the newest 2 (steps 20 and 24 of epoch 3) and last.ckpt, nothing left
    # over but the file the last run resumed from (last.ckpt was corrupt), which Lightning never deletes.
    resumed_from = warning.split("resuming from the newest readable one, ")[1]
    kept = {p.name for p in folder.iterdir()} - {resumed_from}
    assert kept == {"epoch=3-step=20.ckpt", "epoch=3-step=24.ckpt", "last.ckpt"}


def test_last_with_no_checkpoint_starts_fresh_and_a_fresh_start_over_a_run_is_refused(cub, tmp_path, capfd):
    cli = train_main(
        fit_args(cub, tmp_path, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0", "--ckpt_path", "last")
    )
    assert cli.trainer.global_step == 4
    assert f"no checkpoint in {tmp_path / 'checkpoints'} yet: starting the run from step 0" in capfd.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        train_main(fit_args(cub, tmp_path, "--trainer.max_steps", "4"))
    assert exit_info.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "continue it with --ckpt_path last" in err[0]


def test_newest_checkpoint_skips_unreadable_files(tmp_path, recwarn):
    for step in (1, 2, 3):
        torch.save({"global_step": step}, tmp_path / f"step={step}.ckpt")
        os.utime(tmp_path / f"step={step}.ckpt", (step, step))
    assert newest_checkpoint(tmp_path)[1] == {"global_step": 3}
    (tmp_path / "step=3.ckpt").write_bytes((tmp_path / "step=3.ckpt").read_bytes()[:50])  # truncated
    (tmp_path / "step=2.ckpt").write_bytes(b"not a checkpoint")
    os.utime(tmp_path / "step=3.ckpt", (3, 3))
    os.utime(tmp_path / "step=2.ckpt", (2, 2))
    path, checkpoint = newest_checkpoint(tmp_path)
    assert path.name == "step=1.ckpt" and checkpoint == {"global_step": 1}
    (warning,) = [str(w.message) for w in recwarn if "unreadable" in str(w.message)]
    assert "step=3.ckpt" in warning and "step=2.ckpt" in warning and warning.endswith("step=1.ckpt")
    assert newest_checkpoint(tmp_path / "empty") is None


def test_resumed_csv_log_continues_in_the_same_folder(cub, tmp_path):
    train_main(fit_args(cub, tmp_path, "--trainer.max_steps", "8"))
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):  # keep only step 4: steps 4-8 are trained again
        if not path.name.startswith("epoch=0-step=4"):
            path.unlink()
    cli = train_main(fit_args(cub, tmp_path, "--trainer.max_steps", "12", "--ckpt_path", "last"))
    assert cli.trainer.global_step == 12
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
    rows = list(csv.DictReader((tmp_path / "lightning_logs/version_0/metrics.csv").open()))
    train_steps = [int(r["step"]) for r in rows if r["train/loss_d"]]
    assert train_steps == list(range(6))  # each logged once: the first run's steps 2-3 (batches) were replaced
    assert any(r["val/fid"] for r in rows)


def test_max_time_is_per_run_and_lightnings_csv_log_is_kept_on_resume(cub, tmp_path):
    csv_logger = ["--trainer.logger.class_path", "pytorch_lightning.loggers.CSVLogger"]
    train_main(fit_args(cub, tmp_path, "--trainer.max_steps", "4", "--trainer.max_time", "00:01:00:00", *csv_logger))
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):  # as if the earlier runs had spent 10 hours
        ckpt = torch.load(path, weights_only=False, map_location="cpu")
        (timer,) = [key for key in ckpt["callbacks"] if "Timer" in key]
        ckpt["callbacks"][timer]["time_elapsed"]["train"] = 36000.0
        torch.save(ckpt, path)
    cli = train_main(
        fit_args(
            cub,
            tmp_path,
            "--trainer.max_steps",
            "8",
            "--trainer.max_time",
            "00:01:00:00",
            "--ckpt_path",
            "last",
            *csv_logger,
        )
    )
    assert cli.trainer.global_step == 8  # Lightning's Timer counts the restored 10 h and stops at step 4
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
    rows = list(csv.DictReader((tmp_path / "lightning_logs/version_0/metrics.csv").open()))
    assert [int(r["step"]) for r in rows if r["train/loss_d"]] == list(range(4))  # Lightning's deletes steps 0-1


def test_changed_model_settings_apply_on_resume(cub, tmp_path, capfd):
    """Lightning's CLI replaces the model settings with the checkpoint's, and torch's
    Optimizer.load_state_dict restores the saved lr: a resume with a changed `--model.init_args.g_lr` must
    train at the new one (scaled by StyleGAN2's lazy-regularization factor k / (k + 1)), say so, and keep
    Adam's moments."""
    train_main(fit_args(cub, tmp_path, "--trainer.max_steps", "4"))
    saved = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False, map_location="cpu")
    saved_moments = saved["optimizer_states"][0]["state"][0]["exp_avg"]
    capfd.readouterr()
    cli = train_main(
        fit_args(
            cub,
            tmp_path,
            "--trainer.max_steps",
            "4",
            "--model.init_args.g_lr",
            "0.0005",
            "--model.init_args.r1_gamma",
            "0.5",
            "--ckpt_path",
            "last",
        )
    )
    assert "changed from the checkpoint's: g_lr 0.0025 -> 0.0005, r1_gamma" in capfd.readouterr().err
    assert cli.model.hparams.r1_gamma == 0.5
    k = cli.model.hparams.pl_interval
    g_opt, d_opt = cli.trainer.optimizers
    assert g_opt.param_groups[0]["lr"] == pytest.approx(0.0005 * k / (k + 1))
    assert d_opt.param_groups[0]["lr"] == saved["optimizer_states"][1]["param_groups"][0]["lr"]
    assert torch.equal(g_opt.state[g_opt.param_groups[0]["params"][0]]["exp_avg"], saved_moments)
