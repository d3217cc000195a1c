"""StyleGAN2 networks: shapes, published parameter counts, maskable decode, errors."""

import pytest
import torch

from pbw.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

TINY = dict(channel_base=1024, channel_max=64)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_config_f_256_parameter_counts_match_official():
    G = StyleGAN2Generator(256)
    D = StyleGAN2Discriminator(256)
    # Official StyleGAN2 config-f at 256 px: G 30.0M, D 28.9M parameters, 14 w's.
    assert abs(n_params(G) - 30.03e6) < 0.05e6
    assert abs(n_params(D) - 28.86e6) < 0.05e6
    assert G.num_ws == 14
    assert G.synthesis.b64.conv1.weight.shape == (512, 512, 3, 3)
    assert G.synthesis.b128.conv1.weight.shape == (256, 256, 3, 3)
    assert G.synthesis.b256.torgb.weight.shape == (3, 128, 1, 1)


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes_and_gradients(resolution):
    G = StyleGAN2Generator(resolution, z_dim=32, w_dim=32, **TINY)
    D = StyleGAN2Discriminator(resolution, **TINY)
    z = torch.randn(4, 32)
    img = G(z)
    assert img.shape == (4, 3, resolution, resolution)
    logits = D(img)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    assert G.mapping.fc0.weight.grad.abs().sum() > 0
    assert G.synthesis.b4.const.grad.abs().sum() > 0
    assert getattr(D, f"b{resolution}").fromrgb.weight.grad.abs().sum() > 0


def test_truncation_pulls_toward_w_avg():
    G = StyleGAN2Generator(32, z_dim=16, w_dim=16, **TINY)
    z = torch.randn(8, 16)
    G.mapping(z, update_w_avg=True)
    assert G.mapping.w_avg.abs().sum() > 0
    w1 = G.mapping(z)
    w0 = G.mapping(z, truncation_psi=0.0)
    assert torch.allclose(w0, G.mapping.w_avg.expand_as(w0))
    wh = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(wh, 0.5 * (w1 + w0), atol=1e-5)


@pytest.mark.parametrize("resolution", [32, 64])
def test_maskable_decode_properties(resolution):
    G = StyleGAN2Generator(resolution, z_dim=32, w_dim=32, **TINY)
    codes = G.sample(2, seed=3)
    assert torch.equal(codes["z"], G.sample(2, seed=3)["z"])
    w0 = G.encode(codes)
    assert w0.shape == (2, G.num_ws, 32)
    original = G.decode(w0)
    assert torch.equal(original, G.decode(w0)), "decode must be deterministic (const noise)"
    w = w0 + torch.randn_like(w0)
    zeros = torch.zeros(2, 1, resolution, resolution)
    assert torch.equal(G.decode(w, w0, zeros), original)
    assert torch.equal(G.decode(w, w0, torch.ones_like(zeros)), G.decode(w))
    # A right-half mask changes the right half far more than the left.
    half = zeros.clone()
    half[..., resolution // 2 :] = 1
    diff = (G.decode(w, w0, half) - original).abs()
    assert diff[..., 3 * resolution // 4 :].mean() > 2 * diff[..., : resolution // 4].mean()


def test_masked_decode_is_differentiable_in_the_edit_latent():
    G = StyleGAN2Generator(32, z_dim=16, w_dim=16, **TINY)
    w0 = G.encode(G.sample(1, seed=0)).detach()
    w = w0.clone().requires_grad_(True)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    G.decode(w, w0, mask).square().sum().backward()
    assert w.grad.abs().sum() > 0


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(96)
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Discriminator(16)
    G = StyleGAN2Generator(32, z_dim=16, w_dim=16, **TINY)
    w0 = G.encode(G.sample(1, seed=0))
    with pytest.raises(ValueError, match="w0"):
        G.decode(w0, None, torch.ones(1, 1, 32, 32))
    with pytest.raises(ValueError, match="z must have shape"):
        G(torch.randn(2, 8))
