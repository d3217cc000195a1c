"""Image-generation metrics (FID, KID, IS) through torchmetrics, with a configurable feature extractor.

The default extractor is torchmetrics' Inception (weights downloaded on first use; needs
`torch-fidelity`). Offline, or in tests, pass any `nn.Module` mapping images in [0, 1] to feature
vectors, e.g. :class:`RandomConvFeatures` (no download; scores are comparable only between runs
that use the same extractor, not with published numbers).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance


class RandomConvFeatures(nn.Module):
    """A fixed, seeded random conv net: images [B, 3, H, W] in [0, 1] -> [B, num_features].

    Needs no download. Random conv features are a recognised stand-in for Inception features when
    comparing distributions (e.g. Naeem et al. 2020); use it offline and for tests.
    """

    def __init__(self, num_features: int = 64, input_size: int = 64, seed: int = 0):
        super().__init__()
        self.num_features, self.input_size = num_features, input_size
        gen = torch.Generator().manual_seed(seed)
        widths = [3, 32, 64, num_features]
        self.convs = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (c_in * 9) ** 0.5)
                conv.bias.zero_()
            conv.requires_grad_(False)
            self.convs.append(conv)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (
            F.interpolate(
                images.float(),
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            * 2
            - 1
        )
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return x.mean(dim=[2, 3])


class GenerationMetrics(nn.Module):
    """FID, KID and (optionally) IS of generated vs real images given in [-1, 1].

    `feature_extractor=None` uses torchmetrics' Inception (2048-d pool features, logits for IS).
    KID's subset size shrinks to the number of samples available when that is smaller.

    Under torch.distributed, each rank adds its own images and `compute` (called on every rank) gathers
    the features of all ranks (torchmetrics' state sync) and returns the same values on every rank: those
    of one process given all the images. KID's and IS's random subsets are drawn from a fixed seed, so
    every rank draws the same ones. FID and KID (whose subsets span every sample unless there are more
    than `kid_subset_size`) do not depend on the order of the samples; IS's split into groups does, and
    torchmetrics gathers the ranks' features batch by batch, so IS under DDP equals that of one process
    given the same images in that order.
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        fid: bool = True,
        kid: bool = True,
        inception_score: bool = False,
        kid_subset_size: int = 1000,
    ):
        super().__init__()
        feature = 2048 if feature_extractor is None else feature_extractor
        self.kid_subset_size = kid_subset_size
        try:
            self.fid = FrechetInceptionDistance(feature=feature, normalize=True) if fid else None
            self.kid = (
                KernelInceptionDistance(feature=feature, normalize=True, subset_size=kid_subset_size) if kid else None
            )
            # InceptionScore, unlike FID/KID, hands a custom extractor uint8 images when normalize=True.
            self.inception = (
                InceptionScore(
                    feature="logits_unbiased" if feature_extractor is None else feature,
                    normalize=feature_extractor is None,
                )
                if inception_score
                else None
            )
        except (OSError, RuntimeError, ModuleNotFoundError) as err:
            raise RuntimeError(
                "could not build torchmetrics' Inception feature extractor (it needs the `torch-fidelity` package "
                "and downloads its weights on first use). Offline, pass another extractor, e.g. "
                "`feature_extractor: {class_path: pbw.metrics.RandomConvFeatures}` in the model config. "
                f"Cause: {err}"
            ) from err
        self.num_real = 0
        self.num_fake = 0

    @staticmethod
    def _to_unit(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of images in [-1, 1] to the real or generated set. Features are computed in float32
        under autocast too: FID's mean and covariance are differences of large sums, which bf16 would blur."""
        x = self._to_unit(images)
        with torch.autocast(x.device.type, enabled=False):
            for metric in (self.fid, self.kid):
                if metric is not None:
                    metric.update(x, real=real)
            if not real and self.inception is not None:
                self.inception.update(x)
        if real:
            self.num_real += len(x)
        else:
            self.num_fake += len(x)

    def counts(self) -> tuple[int, int]:
        """(real, generated) images added since the last reset, summed over all ranks (a collective
        under torch.distributed: call it on every rank)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.num_real, self.num_fake
        device = next(m.device for m in (self.fid, self.kid, self.inception) if m is not None)
        counts = torch.tensor([self.num_real, self.num_fake], device=device)
        dist.all_reduce(counts)
        return int(counts[0]), int(counts[1])

    def compute(self, seed: int = 0) -> dict[str, float]:
        """The metrics over everything added since the last reset (on all ranks; call it on every rank)."""
        num_real, num_fake = self.counts()
        if num_fake < 2 or (num_real < 2 and (self.fid is not None or self.kid is not None)):
            raise ValueError(
                f"metrics need at least 2 real and 2 generated images, got {num_real} real "
                f"and {num_fake} generated; validate on more batches"
            )
        out = {}
        with torch.random.fork_rng(devices=[]):  # KID and IS draw subsets with torch.randperm on the CPU
            if self.fid is not None:
                out["fid"] = float(self.fid.compute())
            if self.kid is not None:
                self.kid.subset_size = min(self.kid_subset_size, num_real, num_fake)
                out["kid"] = float(self._seeded(self.kid, seed)[0])
            if self.inception is not None:
                out["is"] = float(self._seeded(self.inception, seed)[0])
        return out

    @staticmethod
    def _seeded(metric, seed: int):
        """`metric.compute()` with its random subsets drawn from `seed`."""
        torch.default_generator.manual_seed(seed)
        return metric.compute()

    def reset(self) -> None:
        for metric in (self.fid, self.kid, self.inception):
            if metric is not None:
                metric.reset()
        self.num_real = self.num_fake = 0
