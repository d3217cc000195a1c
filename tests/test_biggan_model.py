"""BigGAN generator/discriminator: published sizes and layout, shapes, maskable decode, bad input."""

import pytest
import torch
import torch.nn.functional as F

from pbw.models.biggan import BigGANDiscriminator, BigGANGenerator, SelfAttention, SNLinear
from pbw.models.maskable import MaskableGenerator


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# (resolution, ch, classes, dim_z, G attention, D attention) -> (G params, D params).
# ImageNet 128 px ch96 is the published BigGAN: G 70.4M, D 88.0M (158.4M together; Table 1 of
# Brock et al. gives 158.3M). The other numbers are those of the authors' PyTorch code
# (ajbrock/BigGAN-PyTorch) in the same configurations, counted exactly.
PUBLISHED = {
    (128, 96, 1000, 120, 64, 64): (70_433_988, 87_982_370),
    (256, 96, 1000, 140, 128, 64): (82_097_604, 99_225_890),
    (128, 96, 365, 120, 64, 64): (70_352_708, 87_007_010),
    (256, 96, 365, 140, 128, 64): (82_016_324, 98_250_530),
    (256, 128, 365, 140, 128, 64): (144_360_324, 174_410_114),
}


@pytest.mark.parametrize("config", list(PUBLISHED))
def test_published_parameter_counts(config):
    res, ch, classes, dim_z, g_attn, d_attn = config
    with torch.device("meta"):
        G = BigGANGenerator(res, ch, classes, dim_z, attention=g_attn, init="none")
        D = BigGANDiscriminator(res, ch, classes, attention=d_attn, init="none")
    assert (n_params(G), n_params(D)) == PUBLISHED[config]


def test_state_dict_layout_matches_the_authors_code():
    with torch.device("meta"):
        G = BigGANGenerator(128, 96, 1000, 120, attention=64, init="none")
        D = BigGANDiscriminator(128, 96, 1000, attention=64, init="none")
    g = {k: list(v.shape) for k, v in G.state_dict().items()}
    d = {k: list(v.shape) for k, v in D.state_dict().items()}
    assert (len(g), len(d)) == (166, 88)
    assert G.dim_z == 120 and G.z_chunk_size == 20
    expected_g = {
        "shared.weight": [1000, 128],
        "linear.weight": [24576, 20],
        "linear.u0": [1, 24576],
        "linear.sv0": [1],
        "blocks.0.0.bn1.gain.weight": [1536, 148],
        "blocks.0.0.bn1.stored_mean": [1536],
        "blocks.3.1.theta.weight": [24, 192, 1, 1],
        "blocks.3.1.gamma": [],
        "blocks.4.0.conv_sc.weight": [96, 192, 1, 1],
        "output_layer.0.gain": [96],
        "output_layer.2.weight": [3, 96, 3, 3],
    }
    expected_d = {
        "embed.weight": [1000, 1536],
        "embed.u0": [1, 1000],
        "linear.weight": [1, 1536],
        "blocks.0.1.o.weight": [96, 48, 1, 1],
        "blocks.0.0.conv1.weight": [96, 3, 3, 3],
        "blocks.5.0.conv1.weight": [1536, 1536, 3, 3],
    }
    assert {k: g[k] for k in expected_g} == expected_g
    assert {k: d[k] for k in expected_d} == expected_d
    assert not any(k.startswith("blocks.5.0.conv_sc") for k in d)  # last D block keeps width and size
    assert "blocks.3.1.gamma" in g and not any(k.startswith(("blocks.2.1", "blocks.4.1")) for k in g)


@pytest.fixture(scope="module")
def tiny():
    """A 128 px BigGAN at width 4 (attention at 64 px), in eval mode."""
    torch.manual_seed(0)
    G = BigGANGenerator(resolution=128, ch=4, n_classes=5, dim_z=60, shared_dim=16, attention=64).eval()
    with torch.no_grad():  # non-zero attention gains and BN statistics, so every path matters
        for m in G.modules():
            if isinstance(m, SelfAttention):
                m.gamma.fill_(0.5)
    return G


def test_shapes_and_range(tiny):
    assert isinstance(tiny, MaskableGenerator) and tiny.resolution == 128
    codes = tiny.sample(3, seed=1)
    assert codes["z"].shape == (3, 60) and codes["class"].dtype == torch.int64
    w = tiny.encode(codes)
    assert w.shape == (3, 16 * 4, 8, 8)
    x = tiny(codes["z"], codes["class"])
    assert x.shape == (3, 3, 128, 128) and x.abs().max() <= 1
    D = BigGANDiscriminator(resolution=128, ch=4, n_classes=5, attention=32)
    assert D(x, codes["class"]).shape == (3, 1)


def test_sample_is_reproducible_and_takes_classes(tiny):
    a, b = tiny.sample(4, seed=7), tiny.sample(4, seed=7)
    assert torch.equal(a["z"], b["z"]) and torch.equal(a["class"], b["class"])
    assert not torch.equal(a["z"], tiny.sample(4, seed=8)["z"])
    assert tiny.sample(4, seed=0, classes=2)["class"].tolist() == [2, 2, 2, 2]
    assert tiny.sample(2, seed=0, classes=[4, 1])["class"].tolist() == [4, 1]
    t = tiny.sample(64, seed=0, truncation=0.5)["z"]
    assert t.abs().max() <= 0.5 and t.std() > 0.1


def test_class_vectors_mix_class_embeddings(tiny):
    codes = tiny.sample(2, seed=6, classes=[1, 3])
    relaxed = tiny.continuous_codes(codes)
    assert relaxed["class"].dtype == torch.float32 and relaxed["class"].argmax(1).tolist() == [1, 3]
    assert tiny.continuous_codes(relaxed) is relaxed
    with torch.no_grad():  # a one-hot class vector is its label; a mixture lies between the two classes
        assert torch.allclose(tiny(codes["z"], relaxed["class"]), tiny(codes["z"], codes["class"]), atol=1e-6)
        mix = torch.full((2, 5), 0.0).index_fill_(1, torch.tensor([1, 3]), 0.5)
        _, ys = tiny.conditioning(codes["z"], mix)
        _, y1 = tiny.conditioning(codes["z"], torch.tensor([1, 1]))
        _, y3 = tiny.conditioning(codes["z"], torch.tensor([3, 3]))
        assert torch.allclose(ys[1], (y1[1] + y3[1]) / 2, atol=1e-6)


def test_decode_of_encode_is_the_forward_pass(tiny):
    codes = tiny.sample(2, seed=3)
    with torch.no_grad():
        assert torch.equal(tiny.decode(tiny.encode(codes), cond=codes), tiny(codes["z"], codes["class"]))


def test_masked_decode_properties(tiny):
    codes, other = tiny.sample(2, seed=4), tiny.sample(2, seed=5)
    with torch.no_grad():
        w0 = tiny.encode(codes)
        w = tiny.encode({"z": other["z"], "class": codes["class"]})
        x0, x1 = tiny.decode(w0, cond=codes), tiny.decode(w, cond=codes)
        zeros, ones = torch.zeros(2, 1, 128, 128), torch.ones(2, 1, 128, 128)
        assert torch.equal(tiny.decode(w, w0, zeros, cond=codes), x0)
        assert torch.equal(tiny.decode(w, w0, ones, cond=codes), x1)
        half = ones.clone()
        half[..., :64] = 0
        xh = tiny.decode(w, w0, half, cond=codes)
    # The edit shows in the masked (right) half; attention carries a little of it to the left half.
    assert (xh - x0)[..., 80:].abs().mean() > 2 * (xh - x0)[..., :48].abs().mean()
    assert (xh - x1)[..., :48].abs().mean() > 2 * (xh - x1)[..., 80:].abs().mean()


def test_masked_decode_is_local_without_attention():
    torch.manual_seed(0)
    G = BigGANGenerator(resolution=128, ch=4, n_classes=5, dim_z=60, shared_dim=16, attention=None).eval()
    codes, other = G.sample(2, seed=4), G.sample(2, seed=5)
    mask = torch.ones(2, 1, 128, 128)
    mask[..., :64] = 0
    with torch.no_grad():
        w0 = G.encode(codes)
        x0 = G.decode(w0, cond=codes)
        xh = G.decode(G.encode({"z": other["z"], "class": codes["class"]}), w0, mask, cond=codes)
    # Outside the convolutions' reach of the mask the original pixels are untouched.
    assert torch.equal(xh[..., :32], x0[..., :32])
    assert (xh - x0)[..., 96:].abs().mean() > 0.01


def test_gradients_reach_w_inside_the_mask_only(tiny):
    codes = tiny.sample(2, seed=6)
    w0 = tiny.encode(codes).detach()
    w = w0.clone().requires_grad_(True)
    mask = torch.zeros(2, 1, 128, 128)
    mask[..., 64:] = 1
    tiny.decode(w, w0, mask, cond=codes).square().mean().backward()
    assert torch.all(w.grad[..., :4] == 0)
    assert w.grad[..., 4:].abs().sum() > 0 and torch.isfinite(w.grad).all()


def test_training_gradients_reach_generator_and_discriminator():
    torch.manual_seed(0)
    G = BigGANGenerator(resolution=32, ch=8, n_classes=3, dim_z=32, shared_dim=8, attention=16)
    D = BigGANDiscriminator(resolution=32, ch=8, n_classes=3, attention=16)
    y = torch.tensor([0, 2, 1, 0])
    D(G(torch.randn(4, G.dim_z), y), y).mean().backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith(("conv1.weight", "conv2.weight", "shared.weight", "embed.weight", "gamma")):
            assert p.grad.abs().sum() > 0, name


def test_labels_outside_the_classes_raise_value_errors(tiny):
    z = torch.randn(2, tiny.dim_z)
    with pytest.raises(ValueError, match="class label 5 is outside this model's classes 0..4"):
        tiny(z, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="class label -1"):
        tiny.encode({"z": z, "class": torch.tensor([-1, 0])})
    with pytest.raises(ValueError, match="outside"):
        tiny.sample(2, classes=7)
    with pytest.raises(TypeError, match=r"integer labels \[B\] or float class vectors \[B, 5\]"):
        tiny(z, torch.tensor([0.0, 1.0]))
    D = BigGANDiscriminator(resolution=32, ch=8, n_classes=3, attention=None)
    with pytest.raises(ValueError, match="outside this model's classes 0..2"):
        D(torch.zeros(1, 3, 32, 32), torch.tensor([3]))


def test_other_bad_input_is_named(tiny):
    codes = tiny.sample(1, seed=0)
    w = tiny.encode(codes)
    with pytest.raises(ValueError, match="cond=codes"):
        tiny.decode(w)
    with pytest.raises(ValueError, match="no w0"):
        tiny.decode(w, mask=torch.ones(1, 1, 128, 128), cond=codes)
    with pytest.raises(ValueError, match=r"z must be \[B, 60\]"):
        tiny(torch.randn(1, 61), torch.tensor([0]))
    with pytest.raises(ValueError, match="resolution must be one of"):
        BigGANGenerator(resolution=100)
    with pytest.raises(ValueError, match="at least 8 channels"):
        BigGANDiscriminator(resolution=128, ch=4, n_classes=5, attention=64)
    with pytest.raises(ValueError, match=r"expects images \[B, 3, 32, 32\]"):
        BigGANDiscriminator(resolution=32, ch=8, n_classes=3, attention=None)(
            torch.zeros(1, 3, 64, 64), torch.tensor([0])
        )


def test_spectral_norm_converges_and_keeps_the_authors_buffers():
    torch.manual_seed(0)
    layer = SNLinear(12, 7)
    assert layer.u0.shape == (1, 7) and layer.sv0.shape == (1,)
    true_sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
    x = torch.randn(3, 12)
    for _ in range(60):
        layer(x)
    assert torch.allclose(layer.sv0, true_sigma.reshape(1), rtol=1e-4)
    assert torch.allclose(
        torch.linalg.matrix_norm(layer.normalized_weight().detach(), ord=2), torch.tensor(1.0), rtol=1e-4
    )
    layer.eval()
    u = layer.u0.clone()
    layer(x)
    assert torch.equal(layer.u0, u)  # no power-iteration update in eval mode


def test_attention_is_the_sagan_formula():
    torch.manual_seed(0)
    att = SelfAttention(16).eval()
    with torch.no_grad():
        att.gamma.fill_(0.8)
        x = torch.randn(2, 16, 8, 8)
        theta = att.theta(x).flatten(2)  # [B, 2, 64]
        phi = F.max_pool2d(att.phi(x), 2).flatten(2)  # [B, 2, 16]
        g = F.max_pool2d(att.g(x), 2).flatten(2)  # [B, 8, 16]
        beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)
        expected = x + 0.8 * att.o((g @ beta.transpose(1, 2)).view(2, 8, 8, 8))
        assert torch.allclose(att(x), expected, atol=1e-5)


def test_orthogonal_init():
    G = BigGANGenerator(resolution=32, ch=8, n_classes=3, dim_z=32, shared_dim=8, attention=None)
    w = G.blocks[0][0].conv1.weight.detach().flatten(1)  # [32, 288]: orthonormal rows
    assert torch.allclose(w @ w.t(), torch.eye(32), atol=1e-5)
