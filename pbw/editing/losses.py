"""Preservation loss outside the edit mask: L1 + LPIPS (torchmetrics' LPIPS network)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchmetrics.functional.image.lpips import _NoTrainLpips

_TV_NAMES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
_TV_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def build_lpips(net: str = "alex", backbone_weights: str | None = None) -> nn.Module:
    """torchmetrics' LPIPS network (its linear heads ship with torchmetrics). The ImageNet backbone
    comes from torchvision's download cache, or from `backbone_weights`: a local torchvision state
    dict file (e.g. alexnet-owt-7be5be79.pth), or `"random"` (timing only)."""
    if net not in _TV_NAMES:
        raise ValueError(f"LPIPS net must be one of {sorted(_TV_NAMES)}, got {net!r}")
    if backbone_weights is None:
        try:
            return _NoTrainLpips(net=net)
        except Exception as e:
            url = getattr(torchvision.models, _TV_WEIGHTS[net]).DEFAULT.url
            raise RuntimeError(
                f"LPIPS needs the torchvision {_TV_NAMES[net]} ImageNet weights, which could not be loaded "
                f"({e}). Download {url} and pass it as lpips_weights=/path/to/{url.rsplit('/', 1)[-1]} "
                f"(CLI: --lpips_weights PATH), or turn LPIPS off (--lpips false)."
            ) from e
    lp = _NoTrainLpips(net=net, pnet_rand=True)
    if backbone_weights != "random":
        tv = getattr(torchvision.models, _TV_NAMES[net])(weights=None)
        try:
            state = torch.load(backbone_weights, map_location="cpu", weights_only=True)
            tv.load_state_dict(state)
        except Exception as e:
            raise RuntimeError(f"{backbone_weights!r} is not a torchvision {_TV_NAMES[net]} state dict: {e}") from e
        dst, src = list(lp.net.parameters()), list(tv.features.parameters())  # slices = features, in order
        if len(dst) > len(src) or any(a.shape != b.shape for a, b in zip(dst, src, strict=True)):
            raise RuntimeError(f"{backbone_weights!r} does not match LPIPS' {_TV_NAMES[net]} backbone")
        with torch.no_grad():
            for a, b in zip(dst, src, strict=True):
                a.copy_(b)
    return lp.eval().requires_grad_(False)


class PreservationLoss(nn.Module):
    """Per-image L1 and LPIPS between x and x0 outside the mask (mask 1 = edit, ignored here)."""

    def __init__(self, lpips: bool = True, net: str = "alex", lpips_weights: str | None = None):
        super().__init__()
        self.lpips = build_lpips(net, lpips_weights) if lpips else None

    def forward(self, x: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(l1 [B], lpips [B]); lpips is zeros when turned off."""
        keep = (1 - mask).expand_as(x)
        l1 = ((x - x0).abs() * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp(min=1e-8)
        if self.lpips is None:
            return l1, torch.zeros_like(l1)
        return l1, self.lpips(x * keep, x0 * keep).flatten()
