"""The miniature's pixel ORACLE: colors read back from pixels alone, snapped to the synthetic birds'
palette (`pbw.data.synthetic.PALETTE`). It is independent of any learned model, so it can judge
whether an edit painted a region the color the words asked for: the median color of a region
(`region_color`), the share of its pixels nearest each color (`color_shares`), the color an edit
added (`painted_color`), and every part's color given a part label map (`part_colors`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pbw.data.synthetic import COLOR_NAMES, PALETTE_RGB, PART_LABELS


def to_rgb_array(image: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """A PIL image, uint8 array [H,W,3], or tensor [3,H,W] in [-1,1] as a float array [H,W,3] in 0..255."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"tensor images must be [3,H,W] in [-1,1], got shape {tuple(image.shape)}")
        return ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy().astype(np.float64)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"array images must be uint8 [H,W,3], got {arr.dtype} {arr.shape}")
    return arr.astype(np.float64)


def nearest_color(rgb) -> tuple[str, float]:
    """The palette color nearest to an RGB triple (0..255) and its Euclidean distance."""
    d = np.linalg.norm(PALETTE_RGB - np.asarray(rgb, dtype=np.float64), axis=1)
    k = int(d.argmin())
    return COLOR_NAMES[k], float(d[k])


def _region_pixels(image: Image.Image | np.ndarray | torch.Tensor, mask) -> np.ndarray:
    """The RGB values [N, 3] (0..255) of the pixels inside ``mask``: a boolean or float [H,W]
    array/tensor (float masks are thresholded at 0.5) matching the image's size."""
    rgb = to_rgb_array(image)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = m.squeeze()
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image size {rgb.shape[:2]}")
    m = m > 0.5 if m.dtype != bool else m
    if not m.any():
        raise ValueError("mask is empty: the oracle needs at least one pixel to read a color")
    return rgb[m]


def region_color(image: Image.Image | np.ndarray | torch.Tensor, mask) -> str:
    """ORACLE: the named palette color of a region (median RGB inside ``mask``, snapped to the palette)."""
    return nearest_color(np.median(_region_pixels(image, mask), axis=0))[0]


def color_shares(image: Image.Image | np.ndarray | torch.Tensor, mask) -> dict[str, float]:
    """ORACLE: for every palette color, the share of the region's pixels nearest to it."""
    pixels = _region_pixels(image, mask)
    nearest = np.linalg.norm(pixels[:, None] - PALETTE_RGB[None], axis=2).argmin(1)
    counts = np.bincount(nearest, minlength=len(COLOR_NAMES)) / len(pixels)
    return dict(zip(COLOR_NAMES, counts.tolist(), strict=True))


# A real bird's body covers 11-21% (quartiles) of a central half-size box in the 32 px birds.
PAINTED_MIN_SHARE = 0.1


def painted_color(
    before: Image.Image | np.ndarray | torch.Tensor,
    after: Image.Image | np.ndarray | torch.Tensor,
    mask,
    min_share: float = PAINTED_MIN_SHARE,
) -> str | None:
    """ORACLE for an edit: the palette color whose share of the region grew the most from `before` to
    `after`, provided it now covers at least `min_share` of the region; None if no color qualifies
    (e.g. nothing changed). Unlike `region_color`, the background the region also holds does not count."""
    old, new = color_shares(before, mask), color_shares(after, mask)
    name = max(new, key=lambda c: new[c] - old[c])
    return name if new[name] > old[name] and new[name] >= min_share else None


def part_colors(image: Image.Image | np.ndarray | torch.Tensor, label_map: np.ndarray) -> dict[str, str]:
    """ORACLE: the named color of every part present in a part label map."""
    return {p: region_color(image, label_map == v) for p, v in PART_LABELS.items() if (label_map == v).any()}


# The central half-size box (the reproduction's box-mask ablation).
CENTRAL_BOX = "0.25,0.25,0.75,0.75"
