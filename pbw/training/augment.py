"""Adaptive discriminator augmentation (ADA, Karras et al. 2020) for images in [-1, 1].

Each transform of the 'bgc' pipeline (blit: x-flip, 90-degree rotations, integer translation;
geometric: isotropic scaling, rotation, anisotropic scaling, fractional translation; color:
brightness, contrast, luma flip, hue rotation, saturation) is applied to each image independently
with probability p. Geometric transforms are composed into one affine matrix and applied with a
single grid_sample (reflection padding); color transforms into one 4x4 matrix. Everything is
differentiable in the images, twice where R1 needs it (`grid_sample_twice_differentiable`). Written
here because the libraries' augmentations (torchvision, kornia) are not p-adaptive per transform in this way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_BILINEAR, _REFLECTION = 0, 2  # aten's codes for mode="bilinear", padding_mode="reflection"


class _GridSample(torch.autograd.Function):
    """Bilinear, reflection-padded grid_sample whose gradient in the images can be differentiated again.

    R1 on augmented reals differentiates D(augment(x)) in x with create_graph and then back-propagates that
    gradient, which needs the derivative of grid_sample's backward. Older PyTorch lacks it (torch 2.11 on
    CUDA: "derivative for aten::grid_sampler_2d_backward is not implemented"; 2.14 has it). The sampling is linear in the
    images, so its backward is the transposed sampling, whose own backward is the sampling again. The
    grid gets no gradient (the augmentation's parameters are drawn, not learned)."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grid)
        ctx.image_shape = images.shape
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (grid,) = ctx.saved_tensors
        return _GridSampleTransposed.apply(grad, grid, ctx.image_shape), None


class _GridSampleTransposed(torch.autograd.Function):
    """The transpose of `_GridSample` in the images (the images' gradient given the output's)."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, grid: torch.Tensor, image_shape: torch.Size) -> torch.Tensor:
        ctx.save_for_backward(grid)
        shape_only = grad.new_empty(image_shape)  # bilinear: the images' gradient depends on their shape alone
        grad_images, _ = torch.ops.aten.grid_sampler_2d_backward(
            grad, shape_only, grid, _BILINEAR, _REFLECTION, False, [True, False]
        )
        return grad_images

    @staticmethod
    def backward(ctx, grad_grad: torch.Tensor):
        (grid,) = ctx.saved_tensors
        return _GridSample.apply(grad_grad, grid), None, None


def grid_sample_twice_differentiable(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(images, grid, "bilinear", "reflection", align_corners=False)`, differentiable twice
    in the images (see `_GridSample`); a grid that needs a gradient takes PyTorch's own path."""
    if grid.requires_grad:
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _GridSample.apply(images, grid)


def _translate(t: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] translations by t [B, 2] (grid units, [-1, 1] spans the image)."""
    m = torch.eye(3, device=t.device).repeat(len(t), 1, 1)
    m[:, :2, 2] = t
    return m


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=sx.device).repeat(len(sx), 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=theta.device).repeat(len(theta), 1, 1)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


class AdaptiveAugment(nn.Module):
    """The ADA 'bgc' pipeline with strength `p` (a buffer, saved in checkpoints)."""

    def __init__(
        self,
        p: float = 0.0,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1.0,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        lumaflip: bool = True,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
    ):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.lumaflip, self.hue_max, self.saturation_std = lumaflip, hue_max, saturation_std

    def _coin(self, n: int, device: torch.device, prob: float | torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample 0/1: whether a transform is applied."""
        prob = self.p if prob is None else prob
        return (torch.rand(n, device=device) < prob).float()

    def _geometric(self, n: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        h, w = size
        m = torch.eye(3, device=device).repeat(n, 1, 1)
        flip = torch.randint(0, 2, (n,), device=device) * self._coin(n, device)
        m = m @ _scale(1 - 2 * flip, torch.ones(n, device=device))
        quarter = torch.randint(0, 4, (n,), device=device) * self._coin(n, device)
        m = m @ _rotate(quarter * (math.pi / 2))
        t = (torch.rand(n, 2, device=device) * 2 - 1) * self.xint_max * self._coin(n, device)[:, None]
        t = torch.stack([torch.round(t[:, 0] * w) / w, torch.round(t[:, 1] * h) / h], dim=1)  # whole pixels
        m = m @ _translate(t * 2)
        s = 2 ** (torch.randn(n, device=device) * self.scale_std * self._coin(n, device))
        m = m @ _scale(s, s)
        p_rot = 1 - torch.sqrt((1 - self.p).clamp(0, 1))  # rotation is split into two halves in the paper
        m = m @ _rotate(
            (torch.rand(n, device=device) * 2 - 1) * math.pi * self.rotate_max * self._coin(n, device, p_rot)
        )
        a = 2 ** (torch.randn(n, device=device) * self.aniso_std * self._coin(n, device))
        m = m @ _scale(a, 1 / a)
        m = m @ _rotate(
            (torch.rand(n, device=device) * 2 - 1) * math.pi * self.rotate_max * self._coin(n, device, p_rot)
        )
        t = torch.randn(n, 2, device=device) * self.xfrac_std * self._coin(n, device)[:, None]
        return m @ _translate(t * 2)

    def _color(self, n: int, device: torch.device) -> torch.Tensor:
        c = torch.eye(4, device=device).repeat(n, 1, 1)
        b = torch.randn(n, device=device) * self.brightness_std * self._coin(n, device)
        t = torch.eye(4, device=device).repeat(n, 1, 1)
        t[:, :3, 3] = b[:, None]
        c = t @ c
        k = 2 ** (torch.randn(n, device=device) * self.contrast_std * self._coin(n, device))
        c = torch.diag_embed(torch.stack([k, k, k, torch.ones_like(k)], 1)) @ c
        v = F.pad(torch.ones(3, device=device), (0, 1)) / math.sqrt(3)  # the gray axis (no host-to-device copy)
        vv = torch.outer(v, v)
        flip = torch.randint(0, 2, (n,), device=device) * self._coin(n, device) * float(self.lumaflip)
        c = (torch.eye(4, device=device) - 2 * vv * flip[:, None, None]) @ c
        theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * self.hue_max * self._coin(n, device)
        c = self._rotate_about_luma(theta) @ c
        s = 2 ** (torch.randn(n, device=device) * self.saturation_std * self._coin(n, device))
        return (vv + (torch.eye(4, device=device) - vv) * s[:, None, None]) @ c

    @staticmethod
    def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
        """[B, 4, 4] rotations by theta around the gray axis (1, 1, 1) / sqrt(3) (Rodrigues' formula)."""
        eye = torch.eye(3, device=theta.device)
        shift = eye.roll(1, dims=1)
        k = (shift.t() - shift) / math.sqrt(3)  # the cross product with the axis, [[0,-a,a],[a,0,-a],[-a,a,0]]
        r = eye + torch.sin(theta)[:, None, None] * k + (1 - torch.cos(theta))[:, None, None] * (k @ k)
        m = torch.eye(4, device=theta.device).repeat(len(theta), 1, 1)
        m[:, :3, :3] = r
        return m

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augmented images, in float32 (the transform matrices, the sampling grid and the sampling run in
        float32 under autocast: in bfloat16 a 256 px grid would be off by up to a pixel). Reading p would
        wait for the GPU, so the transforms are drawn whatever p is, and images come back as they are
        when p is 0."""
        n, c, h, w = images.shape
        device = images.device
        with torch.autocast(device.type, enabled=False):
            x = images.float()
            geo = self._geometric(n, (h, w), device)
            grid = F.affine_grid(geo[:, :2, :], [n, c, h, w], align_corners=False)
            x = grid_sample_twice_differentiable(x, grid)
            color = self._color(n, device)
            x = (color[:, :3, :3] @ x.reshape(n, c, h * w) + color[:, :3, 3:]).reshape(n, c, h, w)
            return torch.where(self.p > 0, x, images.float())


class AdaController:
    """Adjusts ADA's p toward the overfitting target r_t = E[sign(D(real))].

    p moves by (batch_size * interval) / (speed_kimg * 1000) per adjustment, so it can go from 0 to 1
    in `speed_kimg` thousand images.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, speed_kimg: float = 500):
        self.target, self.interval, self.speed_kimg = target, interval, speed_kimg

    def adjust(self, p: torch.Tensor, sign_sum: torch.Tensor, count: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Update p in place from the summed signs of `count` real logits; returns r_t. Tensors in and out,
        on p's device: nothing waits for the GPU."""
        r_t = sign_sum.float() / count.float().clamp(min=1)
        step = torch.full_like(r_t, batch_size * self.interval / (self.speed_kimg * 1000))
        p.copy_((p + torch.copysign(step, r_t - self.target)).clamp(0, 1))
        return r_t
