"""Automated judges standing in for the paper's human studies, and the measures the experiment runner
reports: semantic accuracy by an evaluator CLIP the optimization never saw (`EvaluatorCLIP`, with
`check_independent` refusing the optimizing CLIP itself), realism against real images (`fid_kid`,
torchmetrics), preservation outside the mask (`preservation_outside`: L1, PSNR, LPIPS), the mean
pixel change inside and outside the mask (`change_inside_outside`) and the miniature's pixel-oracle
accuracies (`color_oracle`, `caption_oracle`). Pairwise preference lives in `pbw.evaluation.preference`.

Images are [N, 3, R, R] in [-1, 1]; masks [N, 1, R, R] in [0, 1] (1 = edited).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pbw.data.common import IMAGE_EXTENSIONS, to01
from pbw.evaluation.oracle import painted_color, region_color
from pbw.evaluation.oracle import part_colors as read_part_colors
from pbw.evaluation.stats import mean_interval, wilson_interval
from pbw.semantic import PromptSet, SemanticNet, parse_clip_spec

FEATURES = ("inception", "random", "yardstick")
PSNR_CAP = 100.0  # dB, reported when the pixels outside the mask did not change at all


def accuracy(hits: Sequence[bool]) -> dict:
    """An accuracy with its 95% Wilson interval: {"value", "ci95", "n"}."""
    n = len(hits)
    return {
        "value": float(np.mean(hits)) if n else float("nan"),
        "ci95": list(wilson_interval(int(sum(hits)), n)),
        "n": n,
    }


def mean_ci(values: Sequence[float]) -> dict:
    """A mean with its 95% interval (Student's t): {"value", "ci95"}."""
    return {"value": float(np.mean(values)), "ci95": list(mean_interval(values))}


# ---- realism against real images -------------------------------------------------------------------
def feature_extractor(features: str | nn.Module | None) -> nn.Module | None:
    """`inception` -> None (torchmetrics' Inception: FID/KID comparable with published numbers; needs
    `torch-fidelity` and downloads its weights once); `random` -> `pbw.metrics.RandomConvFeatures`
    (no download; comparable only between runs with the same extractor); `yardstick` ->
    `pbw.evaluation.yardstick.YardstickFeatures` (the mini world's bird features, bundled); a module is
    used as is."""
    from pbw.metrics import RandomConvFeatures

    if features is None or isinstance(features, nn.Module):
        return features
    if features == "inception":
        return None
    if features == "random":
        return RandomConvFeatures()
    if features == "yardstick":
        from pbw.evaluation.yardstick import YardstickFeatures

        return YardstickFeatures()
    raise ValueError(f"FID/KID features must be one of {FEATURES} (or an nn.Module), got {features!r}")


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    features: str | nn.Module = "inception",
    kid_subset_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """FID and KID of `fake` against `real` ([N, 3, R, R] in [-1, 1], or uint8 0..255) through torchmetrics
    (`pbw.metrics.GenerationMetrics`), fed `batch_size` images at a time on `device`.
    torchmetrics draws KID's subsets from torch's global generator, whose start state differs from
    process to process; here they are drawn under `seed` (the global state is left as it was), so the
    same images give the same KID."""
    from pbw.metrics import GenerationMetrics

    if len(fake) < 2 or len(real) < 2:
        return {"fid": float("nan"), "kid": float("nan")}
    m = GenerationMetrics(feature_extractor(features), kid_subset_size=kid_subset_size)
    if device is not None:
        m = m.to(device)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device or "cpu")
            m.update(x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x, real=is_real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return m.compute()


# ---- preservation ----------------------------------------------------------------------------------
def change_inside_outside(x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Mean absolute pixel change (0..1 scale, averaged over channels) inside and outside the mask,
    over all the images' pixels together; outside is NaN when the masks cover everything."""
    d = (to01(x1) - to01(x0)).abs().mean(1, keepdim=True)
    inside = mask.cpu() > 0.5
    return float(d[inside].mean()), float(d[~inside].mean()) if (~inside).any() else float("nan")


@torch.no_grad()
def preservation_outside(
    x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor, lpips: nn.Module | None = None
) -> dict[str, list[float]]:
    """Per image, how well the pixels outside the mask were kept: `preservation_l1` (mean |x1 - x0| on the
    0..1 scale over the outside pixels), `preservation_psnr` (dB over the outside pixels, capped at
    `PSNR_CAP` when nothing changed) and, with an LPIPS network (`pbw.editing.build_lpips`),
    `preservation_lpips` of the two images with the mask's inside blanked (as the edit's own loss)."""
    a, b = to01(x0), to01(x1)
    keep = (1 - mask.float().cpu()).clamp(0, 1).expand_as(a)
    area = keep.flatten(1).sum(1).clamp(min=1e-8)
    l1 = ((b - a).abs() * keep).flatten(1).sum(1) / area
    mse = ((b - a) ** 2 * keep).flatten(1).sum(1) / area
    psnr = [PSNR_CAP if v <= 10 ** (-PSNR_CAP / 10) else min(PSNR_CAP, -10 * math.log10(v)) for v in mse.tolist()]
    out = {"preservation_l1": l1.tolist(), "preservation_psnr": psnr}
    if lpips is not None:
        dev = next(lpips.parameters()).device
        k = keep.to(dev)
        lp = lpips((x0.to(dev).float() * k), (x1.to(dev).float() * k))
        out["preservation_lpips"] = lp.flatten().cpu().tolist()
    return out


# ---- the evaluator CLIP ----------------------------------------------------------------------------
class SameEvaluatorError(ValueError):
    """An evaluator CLIP that is the optimizing CLIP (same model and weights)."""


def _norm_spec(spec: str) -> tuple[str, str | None]:
    """A CLIP spec reduced to what identifies its weights: the model name (lower case, `-quickgelu`
    dropped: the same weights) and the tag or the resolved weights file/folder."""
    name, pretrained = parse_clip_spec(spec)
    if name.startswith("local-dir:"):
        return "local-dir", os.path.realpath(name.removeprefix("local-dir:"))
    name = name.lower().removesuffix("-quickgelu")
    if pretrained is not None and (os.sep in pretrained or os.path.exists(pretrained)):
        pretrained = os.path.realpath(pretrained)
    return name, pretrained


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold the same tensors under the same names (cheap when shapes differ)."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        return False
    return all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def check_independent(
    optimizer_spec: str,
    evaluator_spec: str,
    optimizer: SemanticNet | None = None,
    evaluator: SemanticNet | None = None,
    allow_same: bool = False,
) -> str | None:
    """Refuse (`SameEvaluatorError`) an evaluator that is the optimizing CLIP: the same spec (model
    name up to `-quickgelu`, and tag or weights file), or, once both are loaded, the same weights. An
    edit could score by fooling the very model it was optimized against. With `allow_same`, returns
    a warning for the report instead."""
    why = None
    if _norm_spec(optimizer_spec) == _norm_spec(evaluator_spec):
        why = f"evaluator {evaluator_spec!r} names the CLIP the edits are optimized with ({optimizer_spec!r})"
    elif optimizer is not None and evaluator is not None and same_weights(optimizer.model, evaluator.model):
        why = (
            f"evaluator {evaluator_spec!r} holds the same weights as the CLIP the edits are optimized with "
            f"({optimizer_spec!r})"
        )
    if why is None:
        return None
    if allow_same:
        return f"{why}: its scores are not independent of the optimization (allow_same_evaluator is set)"
    raise SameEvaluatorError(
        f"{why}. An edit can score well by fooling the model it was optimized against, so the evaluator must be "
        "a model the optimization never saw: name a different open_clip model or tag (e.g. ViT-L-14:openai, "
        "ViT-B-16:laion2b_s34b_b88k), or set allow_same_evaluator: true (--allow_same_evaluator true) to "
        "report it anyway, marked as not independent."
    )


class EvaluatorCLIP:
    """Semantic accuracy by a CLIP (`SemanticNet`) that scores each image once, without random crops,
    through the same view of the mask as the optimization (`view`).

    `scores`: the weighted cosine of each image's view with its own prompts (as the optimizing score).
    `accuracy`: whether, among candidate prompts (the task's prompts for the same region), the
    evaluator ranks the asked one first: a zero-shot stand-in for the paper's "is the edit accurate"."""

    def __init__(
        self,
        spec: str,
        view: str = "paste_onto_blank",
        device: str | torch.device = "cpu",
        name: str | None = None,
        cache_dir: str | None = None,
    ):
        self.spec, self.name = spec, name or spec
        self.net = SemanticNet.from_spec(spec, crops=0, view=view, cache_dir=cache_dir).to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, masks: torch.Tensor | None, batch_size: int = 32) -> torch.Tensor:
        """Unit image embeddings [N, D] of the (masked) views."""
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(self.device).float()
            m = None if masks is None else masks[i : i + batch_size].to(self.device).float()
            out.append(self.net.encode_images(self.net.views(x, m, crops=0)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def prompt_scores(self, emb: torch.Tensor, prompts: Sequence[PromptSet]) -> torch.Tensor:
        """[N, P]: the score of every embedding with every prompt set (weighted mean cosine with its
        positive texts, as `SemanticNet.score_from_cos`)."""
        cols = []
        for p in prompts:
            t = self.net.encode_texts(p.texts).cpu()
            w = torch.tensor(p.weights).clamp(min=0)
            cols.append((emb @ t.T * w).sum(1) / w.sum())
        return torch.stack(cols, 1)

    def judge(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None,
        candidates: Sequence[Sequence[int]],
        catalog: Sequence[PromptSet],
    ) -> tuple[list[float], list[bool | None]]:
        """Per image: its score with its own prompt set, `catalog[candidates[i][0]]`, and whether that
        one scores strictly above the other candidates `catalog[candidates[i][1:]]` (None with no other
        candidate: no accuracy to measure)."""
        table = self.prompt_scores(self.embed(images, masks), catalog)
        own, hits = [], []
        for i, cand in enumerate(candidates):
            s = table[i, list(cand)]
            own.append(float(s[0]))
            hits.append(bool((s[1:] < s[0]).all()) if len(cand) > 1 else None)
        return own, hits


# ---- the miniature's pixel oracle ------------------------------------------------------------------
def color_oracle(x0: torch.Tensor, x1: torch.Tensor | None, masks: torch.Tensor, asked: Sequence[str]) -> dict:
    """The miniature's masked-edit oracle (`pbw.evaluation.oracle`): `oracle_accuracy` = the color the
    edit painted into the mask is the asked one, or, when the masked region already had the asked
    color (its median), it still has it: nothing to paint (NaN with no edit, `x1` None);
    `region_accuracy` (stricter) = the masked region's median color is the asked one (of `x0` with no
    edit)."""
    start = [region_color(x0[i], masks[i, 0]) for i in range(len(x0))]
    if x1 is None:
        region = [s == c for s, c in zip(start, asked, strict=True)]
        return {
            "oracle_accuracy": float("nan"),
            "region_accuracy": float(np.mean(region)),
            "region_ci95": accuracy(region)["ci95"],
        }
    region = [region_color(x1[i], masks[i, 0]) == c for i, c in enumerate(asked)]
    painted = [
        painted_color(x0[i], x1[i], masks[i, 0]) == c or (start[i] == c and kept)
        for i, (c, kept) in enumerate(zip(asked, region, strict=True))
    ]
    oracle = accuracy(painted)
    return {
        "oracle_accuracy": oracle["value"],
        "oracle_ci95": oracle["ci95"],
        "region_accuracy": float(np.mean(region)),
        "region_ci95": accuracy(region)["ci95"],
    }


def caption_oracle(
    images: torch.Tensor, part_colors: Sequence[dict[str, str]], part: str = "body", segmenter: nn.Module | None = None
) -> dict:
    """The miniature's text-to-image oracle. It reads each part's color (`oracle.part_colors`) where
    the part segmenter (default: the bundled judge, which sees no bird in a colored blob) finds that
    part: `oracle_accuracy` = the `part` color is the caption's; `caption_part_accuracy` = the share of
    the caption's parts that have the caption's color. A part not found is a miss."""
    found = found_part_colors(images, segmenter)
    body = [f.get(part) == c[part] for f, c in zip(found, part_colors, strict=True)]
    oracle, part_acc = accuracy(body), mean_ci(caption_part_shares(found, part_colors))
    return {
        "oracle_accuracy": oracle["value"],
        "oracle_ci95": oracle["ci95"],
        "caption_part_accuracy": part_acc["value"],
        "caption_part_accuracy_ci95": part_acc["ci95"],
    }


def found_part_colors(images: torch.Tensor, segmenter: nn.Module | None = None) -> list[dict[str, str]]:
    """Per image, the oracle's color of every part where the part segmenter (default: the bundled judge)
    finds it."""
    from pbw.evaluation.segmenter import load_segmenter, segment

    maps = segment(images, segmenter or load_segmenter(kind="judge")).numpy()
    return [read_part_colors(images[i], maps[i]) for i in range(len(images))]


def caption_part_shares(found: Sequence[dict[str, str]], part_colors: Sequence[dict[str, str]]) -> list[float]:
    """Per image, the share of the caption's parts found with the caption's color (`found_part_colors`)."""
    return [
        float(np.mean([f.get(p) == color for p, color in c.items()])) for f, c in zip(found, part_colors, strict=True)
    ]


def load_real_images(folder: str | Path, resolution: int, limit: int | None = None) -> torch.Tensor:
    """Real images for FID/KID: every image file under `folder` (recursively, sorted; the first `limit`),
    resized on the shorter side and center-cropped to `resolution`, as uint8 [N, 3, R, R] (0..255)."""
    from PIL import Image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"real-image folder {folder} does not exist: give a folder of the domain's real "
            "images (e.g. LSUN bedroom or Places365 validation images, CUB-200-2011 images/)"
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if limit is not None:
        files = files[:limit]
    if len(files) < 2:
        raise ValueError(
            f"{folder} holds {len(files)} image(s) ({', '.join(IMAGE_EXTENSIONS)}); FID/KID needs at least 2"
        )
    out = []
    for p in files:
        with Image.open(p) as img:
            img = img.convert("RGB")
            s = resolution / min(img.size)
            img = img.resize(
                (max(resolution, round(img.width * s)), max(resolution, round(img.height * s))), Image.BICUBIC
            )
            left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
        out.append(torch.from_numpy(np.asarray(img, np.uint8).copy()).permute(2, 0, 1))
    return torch.stack(out)
