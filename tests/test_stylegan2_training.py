"""StyleGAN2 training through the CLI: tiny run with metrics, resume, atomic checkpoints, W&B, DDP."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from fixtures_data import write_tiny_cub
from training_probes import assert_metrics_equal_one_process, run_two_rank_ddp

from pbw.cli import train_main
from pbw.training.common import AtomicCheckpointIO
from pbw.training.stylegan2 import StyleGAN2Module

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "pbw/configs/stylegan2/tiny.yaml")


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return write_tiny_cub(tmp_path_factory.mktemp("cub"), n_classes=2, per_class=4)


def run_args(cub, out, *extra):
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
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_run(cub, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cli = train_main(run_args(cub, out))
    return out, cli


def test_tiny_run_trains_with_finite_losses_and_computes_metrics(tiny_run):
    out, cli = tiny_run
    version = out / "lightning_logs" / "version_0"
    rows = list(csv.DictReader((version / "metrics.csv").open()))
    losses = [float(r[k]) for r in rows for k in ("train/loss_d", "train/loss_g") if r.get(k)]
    assert len(losses) >= 8 and all(math.isfinite(v) for v in losses)
    assert any(r.get("train/r1_penalty") for r in rows) and any(r.get("train/pl_penalty") for r in rows)
    fids = [float(r["val/fid"]) for r in rows if r.get("val/fid")]
    kids = [float(r["val/kid"]) for r in rows if r.get("val/kid")]
    assert fids and kids and all(math.isfinite(v) and v >= 0 for v in fids)
    assert sorted(p.name for p in (version / "samples").glob("*.png"))  # sample grids written
    module = cli.model
    assert cli.trainer.global_step == 8 and int(module.iteration) == 4 and int(module.images_seen) == 16
    assert 0 < float(module.augment_pipe.p) <= 1  # ADA moved p (tiny config adapts fast)
    assert float(module.pl_mean) > 0
    ema_params = dict(module.generator_ema.named_parameters())
    assert any(not torch.equal(p, ema_params[n]) for n, p in module.generator.named_parameters())


def test_checkpoint_holds_networks_and_training_state(tiny_run):
    out, cli = tiny_run
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["pbw"]["family"] == "stylegan2" and ckpt["pbw"]["generator"]["resolution"] == 32
    state = ckpt["state_dict"]
    for key in (
        "generator_ema.synthesis.b32.torgb.weight",
        "discriminator.b4.out.weight",
        "augment_pipe.p",
        "pl_mean",
        "images_seen",
        "generator.mapping.w_avg",
    ):
        assert key in state, key
    assert torch.equal(state["augment_pipe.p"], cli.model.augment_pipe.p)
    # The config's retention: the newest 2 (every 4 steps), the best by FID, last.ckpt linking to the newest.
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names[0].startswith("best-step=8-fid=")
    assert names[1:] == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"]
    assert (out / "checkpoints/last.ckpt").resolve().name == "epoch=1-step=8.ckpt"


def test_resume_continues_step_count_ema_and_ada(tiny_run, cub, tmp_path):
    out, _ = tiny_run
    mid = out / "checkpoints/epoch=0-step=4.ckpt"
    saved = torch.load(mid, weights_only=True, map_location="cpu")["state_dict"]
    # Resume with max_steps equal to the checkpoint's step: the state is restored, nothing trains.
    cli = train_main(run_args(cub, tmp_path / "a", "--trainer.max_steps", "4", "--ckpt_path", str(mid)))
    restored = cli.model.state_dict()
    for key in ("augment_pipe.p", "pl_mean", "images_seen", "generator_ema.synthesis.b4.const"):
        assert torch.equal(restored[key].cpu(), saved[key]), key
    cli = train_main(run_args(cub, tmp_path / "b", "--ckpt_path", str(mid)))
    assert cli.trainer.global_step == 8 and int(cli.model.iteration) == 4 and int(cli.model.images_seen) == 16


def test_resume_with_another_architecture_fails_clearly(tiny_run):
    out, _ = tiny_run
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=True, map_location="cpu")
    # (The CLI re-applies the checkpoint's hyperparameters; a Trainer used from Python hits this check.)
    other = StyleGAN2Module(
        resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=16, num_metric_samples=0
    )
    with pytest.raises(ValueError, match="resume with the config"):
        other.on_load_checkpoint(ckpt)


def test_crash_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_wandb_offline_logging_writes_a_local_run_that_resumes(cub, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = [
        "fit",
        "--config",
        TINY,
        "--config",
        str(REPO / "pbw/configs/logging/wandb.yaml"),
        "--data.root",
        str(cub),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.logger.init_args.offline",
        "true",
        "--trainer.val_check_interval",
        "2",
        "--trainer.logger.init_args.project",
        "pbw-test",
    ]
    run_id = train_main([*args, "--trainer.max_steps", "2"]).trainer.logger.version
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb")), "an offline W&B run file should be written"
    resumed = train_main([*args, "--trainer.max_steps", "4", "--ckpt_path", "last"])
    assert resumed.trainer.global_step == 4 and resumed.trainer.logger.version == run_id  # the same W&B run
    assert all(run.name.endswith(run_id) for run in (tmp_path / "wandb").glob("offline-run-*"))


def test_two_process_ddp_with_validation_ends_with_equal_weights_and_one_process_fid(cub, tmp_path):
    """The config's own strategy, validation on: finishes (no rank waits alone in a collective), ranks end
    equal, and FID/KID are those of one process given both ranks' images."""
    rank0 = run_two_rank_ddp(
        run_args(cub, tmp_path, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2"),
        tmp_path,
        validate=True,
    )
    assert int(rank0["images_seen"]) == 2 * 2 * 4  # 2 iterations x 2 ranks x batch 4
    values = assert_metrics_equal_one_process(tmp_path / "probe")
    rows = list(csv.DictReader((tmp_path / "lightning_logs/version_0/metrics.csv").read_text().splitlines()))
    assert [float(r["val/fid"]) for r in rows if r.get("val/fid")] == pytest.approx([values["fid"]], rel=1e-5)
    assert list((tmp_path / "lightning_logs/version_0/samples").glob("*.png"))


def test_two_process_ddp_resumes_and_ends_with_equal_weights(cub, tmp_path):
    probe = ["--trainer.callbacks+=training_probes.StepLog"]
    run_two_rank_ddp(run_args(cub, tmp_path, "--trainer.max_steps", "2", *probe), tmp_path)
    rank0 = run_two_rank_ddp(
        run_args(cub, tmp_path, "--trainer.max_steps", "4", *probe, "--ckpt_path", "last"), tmp_path
    )
    assert int(rank0["images_seen"]) == 2 * 2 * 4  # 2 iterations x 2 ranks x batch 4
    records = [json.loads(line) for line in (tmp_path / "probe/steps.jsonl").read_text().splitlines()]
    starts = [r["iteration"] for r in records if r["kind"] == "start"]
    assert starts == [0, 0, 1, 1]  # both ranks, then both ranks again from the first run's checkpoint
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
