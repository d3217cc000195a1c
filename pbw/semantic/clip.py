"""The semantic network C(x, t) of Paint by Word: an open_clip model seen through differentiable
preprocessing, random crops and masked views, with cached text embeddings and weighted prompts."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.pretrained import download_pretrained_from_hf, get_pretrained_cfg
from torch import nn
from torchvision.ops import roi_align

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
VIEWS = ("paste_onto_blank", "zoom")


def resample_boxes(x: torch.Tensor, boxes: torch.Tensor, size: int, per_image: int = 1) -> torch.Tensor:
    """[B * per_image, C, size, size]: the square `boxes` ([B * per_image, 4] pixel x0, y0, x1, y1;
    image-major) of images x, resampled to `size` by area-adaptive bilinear sampling (roi_align).
    The one way pbw brings images to CLIP's input size: the editor's views and the CLIP trainer."""
    idx = torch.arange(x.shape[0], device=x.device, dtype=x.dtype).repeat_interleave(per_image)[:, None]
    return roi_align(
        x, torch.cat([idx, boxes.to(x.dtype)], 1), output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )


def crop_boxes(base: torch.Tensor, u: torch.Tensor, crop_scale: tuple[float, float]) -> torch.Tensor:
    """[B, K, 4] square crops of `crop_scale` (low, high) of each base box's side ([B, 4] square boxes),
    placed inside it by the uniforms `u` [B, K, 3] (size, x offset, y offset): the editor's random crops,
    and the CLIP trainer's, so that CLIP trains on the views it is used with."""
    side0 = (base[:, 2] - base[:, 0])[:, None]
    lo, hi = crop_scale
    side = side0 * (lo + (hi - lo) * u[..., 0])
    x0 = base[:, :1] + (side0 - side) * u[..., 1]
    y0 = base[:, 1:2] + (side0 - side) * u[..., 2]
    return torch.stack([x0, y0, x0 + side, y0 + side], -1)


def register_model_configs(path: str | os.PathLike | None = None) -> list[str]:
    """Register open_clip model configs (JSON files) from `path` (default: pbw's own, e.g. the tiny
    `pbw-tiny-clip` used by tests and benchmarks). Idempotent; returns the registered names."""
    path = Path(path) if path is not None else MODEL_CONFIG_DIR
    names = [p.stem for p in ([path] if path.is_file() else sorted(path.glob("*.json")))]
    if not all(n in open_clip.list_models() for n in names):
        open_clip.add_model_config(path)
    return names


class MissingWeightsError(RuntimeError):
    """open_clip weights could not be found or downloaded."""


def _weights_file_hint(model: str, tag: str) -> str:
    cfg = get_pretrained_cfg(model, tag) or {}
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        filename = filename or download_pretrained_from_hf.__defaults__[0] or "open_clip_pytorch_model.bin"
        return f"the file '{filename}' of the Hugging Face repo '{repo}' (https://huggingface.co/{repo})"
    return f"the file at {cfg.get('url', '(unknown URL)')}"


def parse_clip_spec(spec: str) -> tuple[str, str | None]:
    """`NAME[:PRETRAINED]` -> (name, pretrained). PRETRAINED is an open_clip tag, a local weights
    file, or `random`; `hf-hub:ORG/REPO` and `local-dir:PATH` (a folder with open_clip_config.json
    and the weights) are passed through whole. Default tag: `openai`."""
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    name, _, pretrained = spec.partition(":")
    if not pretrained:
        pretrained = "openai"
    return name, (None if pretrained == "random" else pretrained)


@dataclass
class PromptSet:
    """Prompts with signed weights: weight > 0 pulls the image towards the text, < 0 pushes away."""

    texts: list[str]
    weights: list[float]

    @classmethod
    def parse(cls, prompt: str | list[str], negative: str | list[str] | None = None) -> PromptSet:
        """`"a red head"`, `"a red head::2 | a crown::1"` (weights after `::`, terms split by `|`),
        or a list of such terms; `negative` terms get weight -1 unless weighted (`"text::0.5"`)."""
        texts, weights = [], []
        for terms, sign in ((prompt, 1.0), (negative, -1.0)):
            if terms is None:
                continue
            if isinstance(terms, str):
                terms = terms.split("|")
            for term in terms:
                text, _, w = term.partition("::")
                text = text.strip()
                if not text:
                    continue
                try:
                    weight = float(w) if w.strip() else 1.0
                except ValueError:
                    raise ValueError(f"prompt weight {w!r} in {term!r} is not a number; write 'text::2.0'") from None
                texts.append(text)
                weights.append(sign * abs(weight) if sign < 0 else weight)
        if not any(w > 0 for w in weights):
            raise ValueError(f"no positive prompt in {prompt!r}: give at least one text to steer towards")
        return cls(texts, weights)


class SemanticNet(nn.Module):
    """C(x, t) over open_clip.

    model/pretrained: an open_clip name with a tag (default ViT-B-32 / openai, as in the paper), a
    local weights file as `pretrained`, `None` for random weights, or model=`hf-hub:ORG/REPO`.
    crops: K random square crops of `crop_scale` of the side (paper: 32 of 70-98%).
    view: how CLIP sees a masked image: `paste_onto_blank` (x * m, blank = mid-grey) or `zoom`
    (crop to the mask's bounding box).
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        crops: int = 32,
        crop_scale: tuple[float, float] = (0.7, 0.98),
        view: str = "paste_onto_blank",
        cache_dir: str | None = None,
    ):
        super().__init__()
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        register_model_configs()
        self.name, self.pretrained = model, pretrained
        self.crops, self.crop_scale, self.view = crops, tuple(crop_scale), view
        self.model = self._create(model, pretrained, cache_dir).eval().requires_grad_(False)
        cfg = getattr(self.model.visual, "preprocess_cfg", {})
        size = self.model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1))
        self.tokenizer = open_clip.get_tokenizer(model)
        self.context_length = getattr(self.tokenizer, "context_length", 77)
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> SemanticNet:
        """Build from a `NAME[:PRETRAINED]` / `hf-hub:ORG/REPO` string (see `parse_clip_spec`)."""
        name, pretrained = parse_clip_spec(spec)
        return cls(name, pretrained, **kwargs)

    @staticmethod
    def _create(model: str, pretrained: str | None, cache_dir: str | None) -> nn.Module:
        if model.startswith(("hf-hub:", "local-dir:")):
            try:
                return open_clip.create_model(model, cache_dir=cache_dir)
            except Exception as e:
                raise MissingWeightsError(
                    f"could not load {model}: {e}. Offline, download its 'open_clip_config.json' and weights "
                    f"into a folder and pass model='local-dir:/path/to/folder' (CLI: --clip local-dir:/path)."
                ) from e
        if pretrained is None:
            return open_clip.create_model(model, pretrained=None)
        if os.path.exists(pretrained) or os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors")):
            if not os.path.isfile(pretrained):
                raise MissingWeightsError(f"CLIP weights file {pretrained!r} does not exist")
            return open_clip.create_model(model, pretrained=pretrained)
        tag_cfg = get_pretrained_cfg(model, pretrained)
        if not tag_cfg:
            raise ValueError(
                f"{pretrained!r} is not an open_clip tag for {model!r} (tags: "
                f"{open_clip.list_pretrained_tags_by_model(model)}) nor an existing file"
            )
        try:
            return open_clip.create_model(
                model,
                pretrained=pretrained,
                cache_dir=cache_dir,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            )
        except RuntimeError as e:
            quick = "-quickgelu" if tag_cfg.get("quick_gelu") and not model.endswith("quickgelu") else ""
            raise MissingWeightsError(
                f"open_clip weights {model}/{pretrained} are not available (no internet and not cached): "
                f"{model}/{pretrained} needs {_weights_file_hint(model, pretrained)}. Download it elsewhere and "
                f"pass the local file: --clip {model}{quick}:/path/to/file "
                f"(Python: SemanticNet('{model}{quick}', pretrained='/path/to/file'))."
            ) from e

    # ---- text -------------------------------------------------------------------------------
    def _token_count(self, text: str) -> int:
        if hasattr(self.tokenizer, "encode"):
            return len(self.tokenizer.encode(text)) + 2  # + start/end tokens
        return len(self.tokenizer.tokenizer(text)["input_ids"])

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings [len(texts), D], cached per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            for t in missing:
                n = self._token_count(t)
                if n > self.context_length:
                    warnings.warn(
                        f"prompt {t!r} is {n} tokens, longer than CLIP's context of "
                        f"{self.context_length}; it is truncated",
                        stacklevel=2,
                    )
            tokens = self.tokenizer(missing).to(self.mean.device)
            emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(missing, emb, strict=True))
        return torch.stack([self._text_cache[t].to(self.mean.device) for t in texts])

    def targets(self, prompts: list[PromptSet]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded text embeddings [B, P, D] and signed weights [B, P] (0 = padding)."""
        p = max(len(s.texts) for s in prompts)
        emb = [self.encode_texts(s.texts) for s in prompts]
        t = torch.zeros(len(prompts), p, emb[0].shape[-1], device=self.mean.device)
        w = torch.zeros(len(prompts), p, device=self.mean.device)
        for i, (s, e) in enumerate(zip(prompts, emb, strict=True)):
            t[i, : len(s.texts)] = e
            w[i, : len(s.texts)] = torch.tensor(s.weights, device=w.device)
        return t, w

    # ---- images -----------------------------------------------------------------------------
    def _base_boxes(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[B, 4] square boxes (x0, y0, x1, y1) in pixels: the whole image, or the mask's bounding
        box (squared, clipped) for the `zoom` view."""
        b, _, h, w = x.shape
        full = torch.tensor([0.0, 0.0, w, h], device=x.device).expand(b, 4).clone()
        if mask is None or self.view != "zoom":
            return full
        on = mask[:, 0] > 0.5
        on = torch.where(on.flatten(1).any(1)[:, None, None], on, mask[:, 0] > 0)
        ys = torch.arange(h, device=x.device).view(1, h, 1).expand_as(on)
        xs = torch.arange(w, device=x.device).view(1, 1, w).expand_as(on)
        big = max(h, w)
        x0 = torch.where(on, xs, big).flatten(1).amin(1).float()
        x1 = torch.where(on, xs, -1).flatten(1).amax(1).float() + 1
        y0 = torch.where(on, ys, big).flatten(1).amin(1).float()
        y1 = torch.where(on, ys, -1).flatten(1).amax(1).float() + 1
        side = torch.maximum(x1 - x0, y1 - y0).clamp(min=min(h, w) / 8, max=min(h, w))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        bx0 = (cx - side / 2).clamp(min=0).minimum(w - side)
        by0 = (cy - side / 2).clamp(min=0).minimum(h - side)
        box = torch.stack([bx0, by0, bx0 + side, by0 + side], 1)
        empty = ~on.flatten(1).any(1)
        return torch.where(empty[:, None], full, box)

    def crop_boxes(self, base: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """[B, K, 4] this net's random crops of the base boxes (`crop_boxes` with its `crop_scale`)."""
        return crop_boxes(base, u, self.crop_scale)

    def views(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        crops: int | None = None,
        generator: torch.Generator | None = None,
        u: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CLIP inputs [B * K, 3, S, S] (normalized) from images in [-1, 1]: the masked view, then K
        random crops of `crop_scale` of its side resized to CLIP's size (K = 0: the whole view).
        `u` ([B, K, 3] uniforms) fixes the crops, e.g. to share them across candidates."""
        k = self.crops if crops is None else crops
        if mask is not None and self.view == "paste_onto_blank":
            x = x * mask
        base = self._base_boxes(x, mask)
        b = x.shape[0]
        if k == 0:
            boxes = base
        else:
            if u is None:
                dev = generator.device if generator is not None else x.device
                u = torch.rand(b, k, 3, device=dev, generator=generator).to(x.device)
            boxes = self.crop_boxes(base, u).flatten(0, 1)
        out = resample_boxes(x, boxes, self.image_size, max(k, 1))
        return ((out + 1) / 2 - self.mean) / self.std

    def encode_images(self, views: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [N, D] of preprocessed views."""
        return F.normalize(self.model.encode_image(views).float(), dim=-1)

    def similarity(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        prompts: list[PromptSet] | tuple,
        crops: int | None = None,
        generator: torch.Generator | None = None,
        u: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cosines [B, K, P] between K views of each image and its prompts. `prompts` is a list of
        PromptSets (one per image) or the (embeddings, weights) pair from `targets`."""
        t, _ = self.targets(prompts) if isinstance(prompts, list) else prompts
        k = self.crops if crops is None else crops
        e = self.encode_images(self.views(x, mask, k, generator, u)).view(x.shape[0], max(k, 1), -1)
        return torch.einsum("bkd,bpd->bkp", e, t)

    @staticmethod
    def loss_from_cos(cos: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Semantic loss [B] = 100 * (weighted mean over positive prompts of (1 - cos) + weighted
        cos of negative prompts), averaged over views."""
        pos = weights.clamp(min=0)
        neg = (-weights).clamp(min=0)
        norm = pos.sum(-1, keepdim=True)
        per_view = ((1 - cos) * pos[:, None]).sum(-1) + (cos * neg[:, None]).sum(-1)
        return 100 * (per_view / norm).mean(1)

    @staticmethod
    def score_from_cos(cos: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Semantic score [B]: weighted cosine with the positive prompts, averaged over views."""
        pos = weights.clamp(min=0)
        return ((cos * pos[:, None]).sum(-1) / pos.sum(-1, keepdim=True)).mean(1)
