"""Zero-shot probes of a text-image model on the synthetic birds (used by the CLIP tests)."""

from collections.abc import Callable

import numpy as np
import torch

from pbw.data.synthetic import PALETTE, PARTS, canonical_caption

Similarity = Callable[[torch.Tensor, list[str]], torch.Tensor]


def part_color_probe(
    similarity: Similarity, images: torch.Tensor, colors: list[dict[str, str]], parts: tuple[str, ...] = PARTS
) -> dict[str, float]:
    """Zero-shot accuracy of a text-image model at naming part colors (chance: 1/len(PALETTE)).

    For each part, the model picks the palette color whose caption "this bird has a <color> <part>."
    scores highest with the image; ``similarity(images, texts)`` returns scores [N, len(texts)].
    """
    names = list(PALETTE)
    accuracy = {}
    for part in parts:
        picks = similarity(images, [canonical_caption({part: c}, (part,)) for c in names]).argmax(1).tolist()
        accuracy[part] = float(np.mean([names[k] == truth[part] for k, truth in zip(picks, colors, strict=True)]))
    return accuracy


def caption_retrieval_accuracy(similarity: Similarity, images: torch.Tensor, colors: list[dict[str, str]]) -> float:
    """Top-1 accuracy of matching each image to its own all-parts caption among all images'
    captions (chance: 1/N; birds with identical colors count as a match)."""
    captions = [canonical_caption(c) for c in colors]
    picks = similarity(images, captions).argmax(1).tolist()
    return float(np.mean([captions[k] == captions[i] for i, k in enumerate(picks)]))
