"""BigGAN-PyTorch G/D state dicts and TF-Hub conversions: configuration from shapes, identical outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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


# A reference forward with BigGAN-PyTorch's numerics (BigGAN.py, layers.py; eval mode, G_shared,
# hier, D_wide), on the state dict as the file holds it, independent of pbw's code.
def sn_weight(sd, p, eps):
    """layers.SN.W_ in eval: one power iteration from u0 (not updated), then weight / sigma."""
    w = sd[f"{p}.weight"]
    w_mat = w.reshape(w.shape[0], -1)
    v = F.normalize(sd[f"{p}.u0"] @ w_mat, eps=eps)
    u = F.normalize(v @ w_mat.t(), eps=eps)
    return w / (v @ w_mat.t() @ u.t()).squeeze()


def sn_conv(x, sd, p, eps):
    w = sn_weight(sd, p, eps)
    return F.conv2d(x, w, sd.get(f"{p}.bias"), padding=w.shape[-1] // 2)


def sn_linear(x, sd, p, eps):
    return F.linear(x, sn_weight(sd, p, eps), sd.get(f"{p}.bias"))


def attention(x, sd, p, eps):
    b, c, h, w = x.shape
    theta = sn_conv(x, sd, f"{p}.theta", eps).view(b, c // 8, h * w)
    phi = F.max_pool2d(sn_conv(x, sd, f"{p}.phi", eps), 2).view(b, c // 8, h * w // 4)
    g = F.max_pool2d(sn_conv(x, sd, f"{p}.g", eps), 2).view(b, c // 2, h * w // 4)
    beta = F.softmax(theta.transpose(1, 2) @ phi, -1)
    return sd[f"{p}.gamma"] * sn_conv((g @ beta.transpose(1, 2)).view(b, c // 2, h, w), sd, f"{p}.o", eps) + x


def ccbn(x, y, sd, p, bn_eps, sn_eps):
    out = F.batch_norm(x, sd[f"{p}.stored_mean"], sd[f"{p}.stored_var"], None, None, False, 0.1, bn_eps)
    gain, bias = 1 + sn_linear(y, sd, f"{p}.gain", sn_eps), sn_linear(y, sd, f"{p}.bias", sn_eps)
    return out * gain[:, :, None, None] + bias[:, :, None, None]


def reference_generator(sd, z, label, bn_eps, sn_eps, out_bn_eps):
    """Generator(z, shared(label)); `out_bn_eps` is the output layer's batch-norm eps."""
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    zs = z.split(z.shape[1] // (n_blocks + 1), 1)
    ys = [torch.cat([sd["shared.weight"][label], zi], 1) for zi in zs[1:]]
    h = sn_linear(zs[0], sd, "linear", sn_eps).view(len(z), -1, 4, 4)
    for i in range(n_blocks):
        p = f"blocks.{i}.0"
        x = F.interpolate(h, scale_factor=2)
        h = F.interpolate(F.relu(ccbn(h, ys[i], sd, f"{p}.bn1", bn_eps, sn_eps)), scale_factor=2)
        h = sn_conv(
            F.relu(ccbn(sn_conv(h, sd, f"{p}.conv1", sn_eps), ys[i], sd, f"{p}.bn2", bn_eps, sn_eps)),
            sd,
            f"{p}.conv2",
            sn_eps,
        )
        h = h + sn_conv(x, sd, f"{p}.conv_sc", sn_eps)
        if f"blocks.{i}.1.gamma" in sd:
            h = attention(h, sd, f"blocks.{i}.1", sn_eps)
    bn = "output_layer.0"
    h = F.batch_norm(
        h, sd[f"{bn}.stored_mean"], sd[f"{bn}.stored_var"], sd[f"{bn}.gain"], sd[f"{bn}.bias"], False, 0.1, out_bn_eps
    )
    return torch.tanh(sn_conv(F.relu(h), sd, "output_layer.2", sn_eps))


def reference_discriminator(sd, x, label, downsample, sn_eps):
    """Discriminator(x, label); `downsample` per block (D_arch's table)."""
    h = x
    for i, down in enumerate(downsample):
        p = f"blocks.{i}.0"
        t = sn_conv(F.relu(sn_conv(F.relu(h) if i > 0 else h, sd, f"{p}.conv1", sn_eps)), sd, f"{p}.conv2", sn_eps)
        t = F.avg_pool2d(t, 2) if down else t
        sc = F.avg_pool2d(h, 2) if down else h  # the 1x1 conv_sc commutes with the pooling
        h = t + (sn_conv(sc, sd, f"{p}.conv_sc", sn_eps) if f"{p}.conv_sc.weight" in sd else sc)
        if f"blocks.{i}.1.gamma" in sd:
            h = attention(h, sd, f"blocks.{i}.1", sn_eps)
    h = F.relu(h).sum([2, 3])
    return sn_linear(h, sd, "linear", sn_eps) + (sn_weight(sd, "embed", sn_eps)[label] * h).sum(1, keepdim=True)


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
        g_sd, d_sd = torch.load(g_path, weights_only=True), torch.load(d_path, weights_only=True)
        torch.testing.assert_close(
            ref, reference_generator(g_sd, codes["z"], codes["class"], 1e-5, 1e-6, 1e-5), rtol=0, atol=1e-4
        )
        d_ref = reference_discriminator(d_sd, ref, codes["class"], [True, True, False, False], 1e-6)  # D_arch[32]
        torch.testing.assert_close(loaded_d(ref, codes["class"]), d_ref, rtol=0, atol=1e-4)

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
    codes, ref = images(g)
    assert torch.equal(images(loaded)[1], ref)
    # eps 1e-4 everywhere, the output batch norm too, as TF-Hub's graph (TFHub/biggan_v1.py at 128 and
    # 256 px); BigGAN.py's own output layer would use 1e-5, a difference of ~1e-4 here.
    with torch.no_grad():
        sd = torch.load(path, weights_only=True)
        expected = reference_generator(sd, codes["z"], codes["class"], 1e-4, 1e-4, 1e-4)
    torch.testing.assert_close(ref, expected, rtol=0, atol=1e-4)


def test_biggan_layout_that_fits_no_published_architecture(tmp_path):
    g = randomized(biggan.BigGANGenerator(**G_KW), 3)
    state = {k: v for k, v in g.state_dict().items() if not k.startswith("blocks.2.")}
    path = tmp_path / "G.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="2 blocks matches no published BigGAN layout"):
        load_generator(path)
