"""The mini world's yardstick: the bundled one tells species and part colors of drawn birds, serves as
FID/KID features, and a tiny one trains, saves and loads."""

import numpy as np
import pytest
import torch

from pbw.assets import mini_yardstick_path
from pbw.data.synthetic import draw_birds
from pbw.evaluation import yardstick as ys
from pbw.metrics import GenerationMetrics


@pytest.fixture(scope="module")
def bundled():
    return ys.load_yardstick()


@pytest.mark.parametrize("resolution", [32, 64])
def test_bundled_yardstick_knows_fresh_birds(bundled, resolution):
    birds = draw_birds(24, resolution, seed=4242)  # a world it never saw
    r = ys.evaluate_on(bundled, birds)
    assert r["species_accuracy"]["value"] >= 0.75, r["species_accuracy"]
    assert r["all_part_colors_accuracy"]["value"] >= 0.8, r["all_part_colors_accuracy"]
    assert r["species_accuracy"]["n"] == 24 and len(r["species_accuracy"]["ci95"]) == 2
    held = bundled.info["heldout"]["32px"]  # what its trainer measured on 1200 held-out birds
    assert held["species_accuracy"]["n"] >= 600 and held["species_accuracy"]["value"] > 0.85


def test_bundle_file_is_small():
    assert mini_yardstick_path().stat().st_size < 2 * 2**20


def test_features_drive_fid_and_tell_birds_from_noise():
    features = ys.YardstickFeatures()
    features.train()  # a trainer calling .train() on its modules must not switch the judge
    assert not features.training and features.num_features == 64
    assert features(torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)).shape == (2, 64)  # torchmetrics' probe
    real = draw_birds(32, 32, seed=7).tensors()
    other = draw_birds(32, 32, seed=8).tensors()
    noise = torch.rand(32, 3, 32, 32) * 2 - 1

    def fid(fake):
        m = GenerationMetrics(features, kid=False)
        m.update(real, real=True)
        m.update(fake, real=False)
        return m.compute()["fid"]

    assert fid(other) < 0.2 * fid(noise)
    f = features((real + 1) / 2)  # standardized on real birds: of order 1 (KID's kernel needs that)
    assert f.mean(0).abs().mean() < 0.5 and 0.5 < f.std(0).mean() < 1.5


def test_reproduction_judges_fid_on_yardstick_features():
    from pbw.evaluation.judges import fid_kid

    real, other = draw_birds(64, 64, seed=7).tensors(), draw_birds(64, 64, seed=8).tensors()
    perm = torch.randperm(64 * 64, generator=torch.Generator().manual_seed(0))
    shuffled = other.flatten(2)[:, :, perm].view_as(other)  # the same pixels, no bird left
    same, scrambled = (fid_kid(real, x, "yardstick", kid_subset_size=16) for x in (other, shuffled))
    assert same["fid"] < 0.2 * scrambled["fid"] and same["kid"] < scrambled["kid"]


def test_species_accuracy_of_a_conditional_generator():
    class Oracle:  # a "generator" that draws the real bird of its class
        is_conditional = True

        def sample(self, n, seed=None, classes=None):
            return {"class": torch.as_tensor(classes)}

        def encode(self, codes):
            return codes["class"]

        def decode(self, w, cond=None):
            birds = draw_birds(36, 32, seed=11)
            return torch.stack([birds.tensors()[np.flatnonzero(birds.species == int(c))[0]] for c in w])

    r = ys.species_accuracy_of(Oracle(), n=12, seed=0, batch_size=5)
    assert r["n"] == 12 and r["value"] >= 0.75 and len(r["per_class"]) == 12


def test_tiny_yardstick_trains_saves_and_loads(tmp_path):
    info = ys.train_yardstick(
        tmp_path / "y.safetensors",
        n=16,
        steps=3,
        batch_size=8,
        width=8,
        features=16,
        heldout=8,
        stats_n=8,
        log=lambda s: None,
    )
    assert set(info["heldout"]) == {"64px", "32px"} and info["trained_on"]["steps"] == 3
    net = ys.load_yardstick(tmp_path / "y.safetensors")
    assert net.info["heldout"] == info["heldout"] and net.fc.out_features == 16
    assert len(ys.YardstickFeatures(str(tmp_path / "y.safetensors")).std) == 16
    out = net(torch.zeros(2, 3, 32, 32))
    assert out["species"].shape == (2, 12) and out["colors"].shape == (2, 5, 11)
    assert "species" in ys.summary(info)
