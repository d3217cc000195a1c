"""ADA: the augmentation pipeline and the p controller."""

import torch
import torch.nn.functional as F

from pbw.training.augment import AdaController, AdaptiveAugment, grid_sample_twice_differentiable

NO_GEOMETRY = dict(xint_max=0, scale_std=0, rotate_max=0, aniso_std=0, xfrac_std=0)
NO_COLOR = dict(brightness_std=0, contrast_std=0, lumaflip=False, hue_max=0, saturation_std=0)


def test_p_zero_is_identity():
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(AdaptiveAugment(p=0)(x), x)


def test_full_strength_changes_images_keeps_shape_and_is_differentiable():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16, requires_grad=True)
    y = AdaptiveAugment(p=1.0)(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_flips_only_gives_exact_flips():
    torch.manual_seed(0)
    aug = AdaptiveAugment(p=1.0, **NO_GEOMETRY, **NO_COLOR)
    x = torch.randn(16, 3, 8, 8)
    # With every other transform at zero strength, each image is itself, x-flipped, or rotated by k*90 degrees.
    y = aug(x)
    for xi, yi in zip(x, y, strict=True):
        candidates = [torch.rot90(v, k, dims=(1, 2)) for v in (xi, xi.flip(-1)) for k in range(4)]
        assert min((yi - c).abs().max().item() for c in candidates) < 1e-4


def test_color_transforms_keep_gray_axis_for_hue_rotation():
    aug = AdaptiveAugment(p=1.0, **NO_GEOMETRY, brightness_std=0, contrast_std=0, saturation_std=0)
    gray = torch.full((4, 3, 4, 4), 0.3)
    out = aug(gray)  # hue rotation and luma flip keep gray pixels gray
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 1], out[:, 2], atol=1e-5)


def test_controller_moves_p_toward_the_target():
    controller = AdaController(target=0.6, interval=4, speed_kimg=1)
    p = torch.tensor(0.5)
    assert controller.adjust(p, sign_sum=torch.tensor(16.0), count=torch.tensor(16), batch_size=8) == 1.0
    assert torch.isclose(p, torch.tensor(0.532))  # overfitting (r_t > target): p grows by 8*4/1000
    controller.adjust(p, sign_sum=torch.tensor(-16.0), count=torch.tensor(16), batch_size=8)
    assert torch.isclose(p, torch.tensor(0.5))


def _random_grid(n: int, size: int) -> torch.Tensor:
    theta = torch.eye(2, 3, dtype=torch.float64).repeat(n, 1, 1) + 0.3 * torch.randn(n, 2, 3, dtype=torch.float64)
    return F.affine_grid(theta, [n, 2, size, size], align_corners=False)


def test_twice_differentiable_grid_sample_matches_pytorch_and_finite_differences():
    """Same values and first gradient as F.grid_sample; gradients of both orders agree with finite
    differences (gradcheck / gradgradcheck); older PyTorch has no second-order grid_sample at all."""
    torch.manual_seed(0)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    grid = _random_grid(2, 5)
    ours = grid_sample_twice_differentiable(x, grid)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    assert torch.allclose(ours, ref)
    w = torch.randn_like(ref)
    assert torch.allclose(torch.autograd.grad((ours * w).sum(), x)[0], torch.autograd.grad((ref * w).sum(), x)[0])
    assert torch.autograd.gradcheck(lambda t: grid_sample_twice_differentiable(t, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda t: grid_sample_twice_differentiable(t, grid), (x,))


def test_r1_penalty_through_the_augmentation_back_propagates_to_the_discriminator():
    """The R1 pattern of the StyleGAN2 trainer: grad of D(augment(x)) in x with create_graph, then the
    penalty's gradient in D's weights (with PyTorch's grid_sample this failed on torch 2.11 with CUDA)."""
    torch.manual_seed(0)
    disc = torch.nn.Conv2d(3, 1, 3)
    real = torch.randn(4, 3, 16, 16).requires_grad_(True)
    logits = disc(AdaptiveAugment(p=1.0)(real)).square().sum()
    (grad,) = torch.autograd.grad(logits, real, create_graph=True)
    grad.square().sum().backward()
    assert disc.weight.grad is not None and disc.weight.grad.abs().sum() > 0
