"""The seam between training and editing: the *maskable generator* interface.

The paper splits a generator G(z) = h(f(z)) and edits w = f(z) inside a mask only. Every generator
family implements this interface; editing code never needs to know which one it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

Codes = dict[str, torch.Tensor]


class MaskableGenerator(nn.Module, ABC):
    """A generator split into `encode` (the paper's f) and `decode` (the paper's h).

    `discriminator` (optional, may be None) scores the realism of images in [-1, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.discriminator: nn.Module | None = None  # becomes a sub-module when a module is assigned

    @property
    @abstractmethod
    def resolution(self) -> int:
        """Side length of the square images this generator makes."""

    @abstractmethod
    def sample(self, n: int, seed: int | None = None, **kwargs: Any) -> Codes:
        """Starting codes for `n` images, reproducible by `seed`: {"z": ...} (+ "class" for BigGAN)."""

    @abstractmethod
    def encode(self, codes: Codes) -> torch.Tensor:
        """w = f(codes), the latent that editing optimizes."""

    @abstractmethod
    def decode(
        self,
        w: torch.Tensor,
        w0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cond: Codes | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1] from w. With `mask` ([B, 1, H, W] in [0, 1], at image resolution,
        1 = edit) and the frozen `w0`, `w` acts inside the mask and `w0` outside. A mask of all
        zeros reproduces decode(w0) exactly; a mask of all ones equals decode(w).

        Several regions: `w` a sequence of K latents and `mask` [B, K, H, W], one channel each. They
        are painted over w0 in order (`paint_regions`): where masks overlap, the later region wins.

        `cond` is the codes dict `w` was encoded from. Generators whose later layers are
        conditioned on more than w need it (BigGAN: the class and the later z chunks); the others
        ignore it. Editing code should always pass it."""

    # ---- the latent spaces an edit may optimize ------------------------------------------------
    #: the spaces this generator offers (`w`: the paper's w = f(z); `z`: its codes, through f)
    spaces: tuple[str, ...] = ("w", "z")
    #: the paper's space for a masked edit and for whole-image generation
    default_spaces: dict[str, str] = {"masked": "w", "whole": "z"}
    #: whether `sample` draws a class and `realism` needs it
    is_conditional: bool = False
    #: the edit settings this generator recommends (its checkpoint's, e.g. the step size its measurements
    #: chose), per kind of edit: {"masked": {"lr": 0.8}, "whole": {"lr": 0.05}}; fill `EditSettings` left None
    edit_settings: dict[str, dict[str, Any]] = {}

    def space(self, name: str | None, masked: bool) -> str:
        """`name`, checked against this generator's spaces, or the paper's default when None."""
        if name is None:
            return self.default_spaces["masked" if masked else "whole"]
        if name not in self.spaces:
            raise ValueError(
                f"latent space {name!r} does not fit a {type(self).__name__}; its spaces are {', '.join(self.spaces)}"
            )
        return name

    def to_space(self, codes: Codes, space: str, w0: torch.Tensor) -> dict[str, torch.Tensor]:
        """The starting latents of an edit in `space`, for an image with `codes` and decode latent `w0`
        (= encode(codes), or a projected photo's latent): `w` -> {"w": w0}; `z` -> the floating-point
        codes (discrete ones made continuous, see `continuous_codes`)."""
        if space == "w":
            return {"w": w0}
        return {k: v for k, v in self.continuous_codes(codes).items() if v.is_floating_point()}

    def from_space(self, latents: dict[str, torch.Tensor], space: str, codes: Codes) -> tuple[torch.Tensor, Codes]:
        """The decode latent w and the conditioning codes for `latents` in `space` (inverse of `to_space`)."""
        if space == "w":
            return latents["w"], codes
        codes = {**codes, **latents}
        return self.encode(codes), codes

    def realism(self, images: torch.Tensor, codes: Codes) -> torch.Tensor | None:
        """The discriminator's score per image ([B]; higher = more real), or None without one."""
        if self.discriminator is None:
            return None
        return self.discriminator.eval()(images).flatten()

    # ---- what photo projection needs (pbw.editing.project) --------------------------------------
    #: the spaces a photo is projected into, the default first
    projection_spaces: tuple[str, ...] = ("z", "w")
    #: pivotal tuning's learning rate (PTI's 3e-4)
    tuning_lr: float = 3e-4

    def decode_parameter_names(self) -> list[str]:
        """The parameters of the decode path h that encode (f) does not use: what pivotal tuning changes."""
        raise NotImplementedError(
            f"pivotal tuning does not know the decode path of a {type(self).__name__}; project with tune_steps=0"
        )

    def mean_latent(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, float] | None:
        """Where a photo's latent search starts when no photo is needed to choose it: the mean decode
        latent of `n` samples ([1, ...], as `decode` takes it) and the samples' spread (NVIDIA's
        projector for a mapping network). None: the search starts from the best of sampled codes."""
        return None

    def continuous_codes(self, codes: Codes) -> Codes:
        """`codes` with every discrete code made continuous, for whole-image (text-to-image) editing,
        which optimizes the floating-point codes. BigGAN turns class labels into one-hot class vectors;
        by default codes are returned unchanged (discrete ones then stay fixed)."""
        return codes


def paint_regions(regions: torch.Tensor | list[torch.Tensor], base: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`regions` painted over `base` in order through the channels of `mask` ([B, K, ...] in [0, 1]):
    out = r_k * m_k + (region k-1's result) * (1 - m_k). Where masks overlap the later region wins; with
    one region this is r * m + base * (1 - m). `regions`: K tensors shaped like `base`, or one tensor
    (K = 1)."""
    regions = [regions] if torch.is_tensor(regions) else list(regions)
    if len(regions) != mask.shape[1]:
        raise ValueError(f"{len(regions)} region latent(s) but a mask of {mask.shape[1]} channel(s): give one each")
    out = base
    for k, r in enumerate(regions):
        m = mask[:, k : k + 1]
        out = r * m + out * (1 - m)
    return out


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a [B, 1, H, W] soft mask to `size` x `size` (area-averaged when shrinking)."""
    if mask.shape[-1] == size and mask.shape[-2] == size:
        return mask
    if mask.shape[-1] > size:
        return torch.nn.functional.interpolate(mask, size=(size, size), mode="area")
    return torch.nn.functional.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)
