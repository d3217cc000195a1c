"""EditRequest: what one edit asks for. Its words and where they act: one prompt set and one mask (or
none: the whole image), or several regions, each a prompt set and a mask of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pbw.models.maskable import Codes, resize_mask
from pbw.semantic import PromptSet

if TYPE_CHECKING:
    from pbw.editing.result import EditResult


@dataclass
class Region:
    """Part of an edit: its words and its [1, 1, R, R] mask (1 = edit; None: the whole image, for a
    one-region edit only)."""

    prompt: PromptSet
    mask: torch.Tensor | None = None


@dataclass
class EditRequest:
    """One edit: where it starts, and its words and mask(s).

    Words and mask: `prompt` and `mask` ([1, 1, R, R]; None: the whole image), or `regions` (one or
    more `Region`s, each with its own mask; where masks overlap, the later region wins). Each region
    gets its own latent. It starts from `codes` (batch of 1, from `generator.sample`) or from `base`, a
    previous `EditResult` (or a projected photo), whose image it keeps outside the mask(s)."""

    prompt: PromptSet | None = None
    codes: Codes | None = None
    mask: torch.Tensor | None = None
    name: str = ""
    notes: list[str] = field(default_factory=list)
    base: EditResult | None = None
    regions: list[Region] = field(default_factory=list)

    def __post_init__(self):
        if (self.codes is None) == (self.base is None):
            raise ValueError("an edit request starts from codes or from a base result: give exactly one")
        if self.regions:
            if self.prompt is not None or self.mask is not None:
                raise ValueError("an edit request has a prompt (and a mask) or regions, not both")
            if len(self.regions) > 1 and any(r.mask is None for r in self.regions):
                raise ValueError("each of several regions needs a mask (a region without one would be the whole image)")
        elif self.prompt is None:
            raise ValueError("an edit request needs a prompt (and a mask), or regions")

    @property
    def all_regions(self) -> list[Region]:
        """The request's regions (a one-region request: its prompt and mask)."""
        return list(self.regions) or [Region(self.prompt, self.mask)]

    @property
    def masked(self) -> bool:
        """Whether the edit acts inside mask(s) rather than on the whole image."""
        return self.all_regions[0].mask is not None

    @property
    def union_mask(self) -> torch.Tensor | None:
        """Where any region acts ([1, 1, R, R]: the pixelwise maximum of the masks), or None (whole image)."""
        masks = [r.mask for r in self.all_regions]
        if masks[0] is None:
            return None
        if len(masks) == 1:
            return masks[0]
        size = max(m.shape[-1] for m in masks)
        return torch.stack([resize_mask(m.float(), size) for m in masks]).amax(0)
