"""Mixed precision: one whole StyleGAN2 iteration under bf16 autocast trains every parameter as fp32 does."""

import pytest
import torch

from pbw.training.stylegan2 import StyleGAN2Module


def _tiny_module() -> StyleGAN2Module:
    torch.manual_seed(0)
    return StyleGAN2Module(
        resolution=32,
        z_dim=16,
        w_dim=16,
        mapping_layers=2,
        channel_base=256,
        channel_max=16,
        mbstd_group_size=2,
        augment_p=0.5,  # R1 goes through ADA's grid sampling and color matrices
        num_metric_samples=0,
    )


def _iteration_gradients(module: StyleGAN2Module, reals: torch.Tensor, bf16: bool) -> dict[str, torch.Tensor]:
    """The gradients of one iteration's losses: D main + R1 (through ADA), then G main + path length."""
    grads = {}
    torch.manual_seed(1)  # the same latents, noise and augmentations in both precisions
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        d_loss = module._discriminator_step(reals, do_r1=True)["_loss"]
    d_loss.backward()
    grads |= {f"D.{n}": p.grad.clone() for n, p in module.discriminator.named_parameters()}
    module.discriminator.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = module._generator_step(len(reals), do_pl=True)
    out["_loss"].backward()
    module.discriminator.requires_grad_(True)
    grads |= {f"G.{n}": p.grad.clone() for n, p in module.generator.named_parameters()}
    module.zero_grad(set_to_none=True)
    assert out["pl_penalty"] > 0 and module.augment_pipe.p > 0
    return grads


@pytest.fixture(scope="module")
def gradients():
    module = _tiny_module()
    reals = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    pl_mean = module.pl_mean.clone()
    fp32 = _iteration_gradients(module, reals, bf16=False)
    module.pl_mean.copy_(pl_mean)  # the path-length mean as the fp32 iteration found it
    bf16 = _iteration_gradients(module, reals, bf16=True)
    return fp32, bf16


def test_bf16_iteration_gives_every_parameter_a_finite_gradient(gradients):
    fp32, bf16 = gradients
    assert (
        fp32.keys() == bf16.keys() and any(k.startswith("D.") for k in fp32) and any(k.startswith("G.") for k in fp32)
    )
    for name, g in bf16.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0 or fp32[name].abs().sum() == 0, f"{name} got no gradient under bf16"


def test_bf16_iteration_gradients_are_close_to_fp32(gradients):
    """bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operation); through a dozen layers
    and the double backward of R1 and path length the rounding adds up to a few percent: each weight and
    bias gradient must point the fp32 way (cosine > 0.98, measured >= 0.994) with a norm within 10%
    (measured <= 4.3%), and each network's whole gradient must be within 10% of fp32's (measured about 3%).
    A noise strength's gradient is one sum over every pixel of terms that largely cancel, so its relative
    error is that of the terms times the cancellation (measured up to 31%): the network-wide check covers it.
    (Both iterations draw the same noise: the generator draws it in float32 whatever the precision.)"""
    fp32, bf16 = gradients
    for name, g32 in fp32.items():
        g16 = bf16[name].float()
        if g32.abs().sum() == 0:
            continue
        if name.endswith("noise_strength"):
            continue
        ratio = g16.norm() / g32.norm()
        cosine = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine > 0.98 and 0.9 < ratio < 1.1, f"{name}: cosine {cosine:.4f}, norm ratio {ratio:.3f}"
    for net in ("G.", "D."):
        g32 = torch.cat([g.flatten() for k, g in fp32.items() if k.startswith(net)])
        g16 = torch.cat([g.float().flatten() for k, g in bf16.items() if k.startswith(net)])
        assert (g16 - g32).norm() / g32.norm() < 0.1, net


def test_metric_features_stay_float32_under_autocast():
    from pbw.metrics import GenerationMetrics, RandomConvFeatures

    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    values = []
    for autocast in (False, True):
        metrics = GenerationMetrics(RandomConvFeatures(num_features=8), kid=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            metrics.update(images[:3], real=True)
            metrics.update(images[3:], real=False)
        values.append(metrics.compute()["fid"])
    assert values[0] == values[1]
