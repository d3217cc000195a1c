"""BigGAN-PyTorch G/D state dicts and TF-Hub conversions: configuration from shapes, identical outputs."""
from __future__ import annotations

import pytest
import torch

from pbw.checkpoints import CheckpointError, load_generator, read_checkpoint
from pbw.checkpoints.__main__ import main as cli_main

biggan = pytest.importorskip("pbw.models.biggan")

# 32 px: three up-blocks of 4 * ch channels; attention needs >= 8 channels.
G_KW = dict(resolution=32, ch=2, n_classes=5, dim_z=16, shared_dim=6, attention=[16])
D_KW = dict(resolution=32, ch=2, n_classes=5, attention=[16])


def randomized(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("stored_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * (0.3 if name.endswith(("bias", "gamma")) else 1.0))
    return module.eval()


def images(g, seed=4):
    codes = g.sample(3, seed=seed)
    with torch.no_grad():
        return codes, g(codes["z"], codes["class"])


def test_biggan_pytorch_g_and_d_state_dicts(tmp_path):
    g = randomized(biggan.BigGANGenerator(**G_KW), 0)
    d = randomized(biggan.BigGANDiscriminator(**D_KW), 1)
    g_path, d_path = tmp_path / "G_ema.pth", tmp_path / "D.pth"
    # As BigGAN-PyTorch's utils.save_weights writes them (torch.save(G.state_dict(), ...)); the
    # published 2019 weights use torch's legacy serialization, which is read as well.
    torch.save(g.state_dict(), g_path, _use_new_zipfile_serialization=False)
    torch.save(d.state_dict(), d_path)

    imported = read_checkpoint(g_path)
    assert imported.format == "BigGAN-PyTorch state dict"
    assert {k: imported.generator_kwargs[k] for k in G_KW} == {**G_KW, "dim_z": 16}
    loaded = load_generator(g_path, discriminator_file=d_path)
    assert isinstance(loaded, biggan.BigGANGenerator)
    for k, v in g.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    codes, ref = images(g)
    assert torch.equal(images(loaded)[1], ref)
    loaded_d = loaded._modules["discriminator"]
    with torch.no_grad():
        assert torch.equal(loaded_d(ref, codes["class"]), d(ref, codes["class"]))

    out = tmp_path / "places.ckpt"
    assert cli_main(["convert", str(g_path), str(out), "--discriminator", str(d_path)]) == 0
    again = load_generator(out)
    assert torch.equal(images(again)[1], ref) and again._modules["discriminator"] is not None

    with pytest.raises(CheckpointError, match="holds only a discriminator"):
        load_generator(d_path)
    with pytest.raises(CheckpointError, match=r"BigGAN-PyTorch.*shape mismatch"):
        load_generator(g_path, dim_z=24)


def test_tfhub_converted_biggan_without_sv0(tmp_path):
    g = randomized(biggan.BigGANGenerator(**G_KW, bn_eps=1e-4, sn_eps=1e-4), 2)
    path = tmp_path / "biggan-32.pth"
    # TFHub/converter.py's output has no sv0 buffers and uses eps 1e-4.
    torch.save({k: v for k, v in g.state_dict().items() if not k.endswith(".sv0")}, path)
    imported = read_checkpoint(path)
    assert imported.format.startswith("TF-Hub") and imported.generator_kwargs["bn_eps"] == 1e-4
    assert any("sv0" in n for n in imported.notes)
    loaded = load_generator(path)
    assert torch.equal(images(loaded)[1], images(g)[1])


def test_biggan_layout_that_fits_no_published_architecture(tmp_path):
    g = randomized(biggan.BigGANGenerator(**G_KW), 3)
    state = {k: v for k, v in g.state_dict().items() if not k.startswith("blocks.2.")}
    path = tmp_path / "G.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="2 blocks matches no published BigGAN layout"):
        load_generator(path)
