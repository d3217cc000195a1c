"""BigGAN training through the CLI: tiny run with metrics, resume, checkpoints, bad configs, DDP."""

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
from fixtures_data import write_tiny_places
from training_probes import assert_metrics_equal_one_process, run_two_rank_ddp

from pbw.cli import train_main
from pbw.training.biggan import BigGANModule, hinge_loss_d, hinge_loss_g, orthogonal_penalty

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "pbw/configs/biggan/tiny.yaml")


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    return write_tiny_places(tmp_path_factory.mktemp("places"), per_class=2, val_per_class=3, size=40)


def run_args(places, out, *extra):
    return [
        "fit",
        "--config",
        TINY,
        "--data.root",
        str(places),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_run(places, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cli = train_main(run_args(places, out))
    return out, cli


def test_tiny_run_trains_with_finite_losses_and_computes_metrics(tiny_run):
    out, cli = tiny_run
    version = out / "lightning_logs" / "version_0"
    rows = list(csv.DictReader((version / "metrics.csv").open()))
    keys = ("train/loss_d_real", "train/loss_d_fake", "train/loss_g", "train/ortho_penalty")
    values = {k: [float(r[k]) for r in rows if r.get(k)] for k in keys}
    assert all(len(v) >= 4 and all(math.isfinite(x) for x in v) for v in values.values()), values
    assert all(x > 0 for x in values["train/ortho_penalty"])
    for metric in ("val/fid", "val/kid", "val/is"):
        scores = [float(r[metric]) for r in rows if r.get(metric)]
        assert len(scores) == 2 and all(math.isfinite(v) for v in scores), metric
    grids = sorted((version / "samples").glob("*.png"))
    assert len(grids) == 3  # the sanity check, then steps 6 and 12
    from PIL import Image

    width, height = Image.open(grids[0]).size
    assert (width, height) == (2 + 2 * 34, 2 + 4 * 34)  # 4 class rows x 2 columns of 32 px + padding
    module = cli.model
    assert cli.trainer.global_step == 12 and int(module.iteration) == 4 and int(module.images_seen) == 16
    ema = dict(module.generator_ema.named_parameters())
    assert any(not torch.equal(p, ema[n]) for n, p in module.generator.named_parameters())  # decaying after start


def test_checkpoint_holds_networks_and_the_pbw_entry(tiny_run):
    out, cli = tiny_run
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=True, map_location="cpu")
    entry = ckpt["pbw"]
    assert entry["family"] == "biggan" and entry["format_version"] == 1
    assert entry["generator"] == dict(
        resolution=32,
        ch=8,
        n_classes=4,
        sn_eps=1e-6,
        num_sv_itrs=1,
        dim_z=32,
        shared_dim=8,
        attention=[16],
        bn_eps=1e-5,
        init="none",
    )
    state = ckpt["state_dict"]
    for key in (
        "generator.shared.weight",
        "generator_ema.blocks.1.1.gamma",
        "generator_ema.linear.u0",
        "discriminator.embed.weight",
        "discriminator.blocks.0.1.theta.sv0",
        "iteration",
        "images_seen",
    ):
        assert key in state, key
    # The entry rebuilds the networks, and the checkpoint's weights load into them.
    from pbw.models.biggan import BigGANDiscriminator, BigGANGenerator

    G = BigGANGenerator(**entry["generator"])
    G.load_state_dict({k[len("generator_ema.") :]: v for k, v in state.items() if k.startswith("generator_ema.")})
    D = BigGANDiscriminator(**entry["discriminator"])
    D.load_state_dict({k[len("discriminator.") :]: v for k, v in state.items() if k.startswith("discriminator.")})


def test_resume_continues_iterations_and_ema(tiny_run, places, tmp_path):
    out, _ = tiny_run
    mid = out / "checkpoints/epoch=0-step=6.ckpt"
    saved = torch.load(mid, weights_only=True, map_location="cpu")["state_dict"]
    cli = train_main(run_args(places, tmp_path / "a", "--trainer.max_steps", "6", "--ckpt_path", str(mid)))
    restored = cli.model.state_dict()
    for key in (
        "iteration",
        "images_seen",
        "generator_ema.linear.weight",
        "generator.blocks.0.0.bn1.stored_mean",
        "discriminator.linear.u0",
    ):
        assert torch.equal(restored[key].cpu(), saved[key]), key
    (tmp_path / "b/checkpoints").mkdir(parents=True)  # a run whose newest checkpoint is the middle one
    shutil.copy(mid, tmp_path / "b/checkpoints")
    cli = train_main(run_args(places, tmp_path / "b", "--ckpt_path", "last"))
    assert cli.trainer.ckpt_path == str(tmp_path / "b/checkpoints" / mid.name)
    assert cli.trainer.global_step == 12 and int(cli.model.iteration) == 4 and int(cli.model.images_seen) == 16


def test_resume_with_another_architecture_fails_clearly(tiny_run):
    # (LightningCLI itself rebuilds the model from the checkpoint's hyperparameters on --ckpt_path;
    # this guards Trainer.fit(model, ckpt_path=...) with a differently built model.)
    out, _ = tiny_run
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=True, map_location="cpu")
    wider = BigGANModule(
        resolution=32, ch=16, n_classes=4, dim_z=32, shared_dim=8, g_attention=16, d_attention=16, num_metric_samples=0
    )
    with pytest.raises(ValueError, match="resume with the config"):
        wider.on_load_checkpoint(ckpt)


def test_class_count_mismatch_and_unsplittable_batch_fail_clearly(places, tmp_path):
    with pytest.raises(ValueError, match="set model.init_args.n_classes: 4"):
        train_main(run_args(places, tmp_path / "a", "--model.init_args.n_classes", "3"))
    with pytest.raises(ValueError, match="multiple of 2"):
        train_main(run_args(places, tmp_path / "b", "--data.init_args.batch_size", "3"))


def test_a_class_subset_trains(places, tmp_path):
    cli = train_main(
        run_args(
            places,
            tmp_path,
            "--data.init_args.classes",
            "[bedroom, kitchen]",
            "--model.init_args.n_classes",
            "2",
            "--trainer.max_steps",
            "3",
            "--trainer.limit_val_batches",
            "0",
        )
    )
    assert int(cli.model.iteration) == 1


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.0])
    loss_real, loss_fake = hinge_loss_d(real, fake)
    assert torch.isclose(loss_real, torch.tensor((0 + 0.5 + 2) / 3))
    assert torch.isclose(loss_fake, torch.tensor((0 + 1 + 2) / 3))
    assert torch.isclose(hinge_loss_g(fake), torch.tensor(2 / 3))


def test_orthogonal_penalty_matches_the_authors_update():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    (0.5 * orthogonal_penalty([w])).backward()
    m = w.detach().flatten(1)
    expected = 2 * ((m @ m.t()) * (1 - torch.eye(6))) @ m  # BigGAN-PyTorch utils.ortho, strength 1
    assert torch.allclose(w.grad.flatten(1), expected, rtol=1e-4, atol=1e-4)
    q = torch.linalg.qr(torch.randn(8, 5))[0].t()  # orthonormal rows
    assert orthogonal_penalty([q]) < 1e-10


def test_two_process_ddp_with_validation_ends_with_equal_weights_and_one_process_metrics(places, tmp_path):
    """The config's own strategy, validation on: finishes (no rank waits alone in a collective), ranks end
    equal, and FID/KID/IS are those of one process given both ranks' images."""
    rank0 = run_two_rank_ddp(run_args(places, tmp_path, "--trainer.max_steps", "6"), tmp_path, validate=True)
    assert_metrics_equal_one_process(tmp_path / "probe", inception_score=True)
    rows = list(csv.DictReader((tmp_path / "lightning_logs/version_0/metrics.csv").read_text().splitlines()))
    assert [r for r in rows if r.get("val/fid")] and list((tmp_path / "lightning_logs/version_0/samples").glob("*.png"))
    assert int(rank0["images_seen"]) == 2 * 2 * 4  # 2 iterations x 2 ranks x batch 4
    assert int(rank0["iteration"]) == 2
