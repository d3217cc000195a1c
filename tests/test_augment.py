"""ADA: the augmentation pipeline and the p controller."""
import torch

from pbw.training.augment import AdaController, AdaptiveAugment

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
    for xi, yi in zip(x, y):
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
    assert controller.adjust(p, sign_sum=16, count=16, batch_size=8) == 1.0
    assert torch.isclose(p, torch.tensor(0.532))  # overfitting (r_t > target): p grows by 8*4/1000
    controller.adjust(p, sign_sum=-16, count=16, batch_size=8)
    assert torch.isclose(p, torch.tensor(0.5))
