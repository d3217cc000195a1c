"""Edit masks: 1 (white) = edit, 0 (black) = keep. Read from images, .npy files or rectangles, or
found in the start image: ``part:body`` (any of body, head, wing, tail, beak; several joined by
``+``) is where the mini world's part segmenter (`pbw.evaluation.segmenter`) sees those parts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_RECT = re.compile(r"^\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*$")


PART_PREFIX = "part:"


class MaskError(ValueError):
    """A mask that cannot be used (unreadable, empty, out of range)."""


def is_part_spec(spec) -> bool:
    """Whether `spec` names bird parts (``part:body``, ``part:body+wing``): a mask found in the image."""
    return isinstance(spec, str) and spec.strip().lower().startswith(PART_PREFIX)


def _part(spec: str, image: torch.Tensor | None, allow_empty: bool = False) -> tuple[np.ndarray, str]:
    from pbw.evaluation.segmenter import parse_parts, part_mask

    try:
        parts = parse_parts(spec.strip()[len(PART_PREFIX) :])
    except ValueError as e:
        raise MaskError(f"mask {spec!r}: {e}") from None
    if image is None:
        raise MaskError(
            f"mask {spec!r} follows the bird in the start image, so it needs that image "
            "(load_mask(..., image=the decoded start image))"
        )
    m = part_mask(image.detach(), parts).numpy().astype(np.float32)
    if not m.any() and not allow_empty:
        raise MaskError(
            f"mask {spec!r}: the part segmenter finds no {'+'.join(parts)} in the start image; "
            "paint a mask or give a rectangle instead"
        )
    return m, f"mask: the {'+'.join(parts)} the part segmenter finds in the start image ({m.mean():.0%} of it)"


def _rectangle(spec: str, size: int) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in _RECT.match(spec).groups())
    if max(x0, y0, x1, y1) <= 1.0:  # fractions of the side
        x0, y0, x1, y1 = (v * size for v in (x0, y0, x1, y1))
    if min(x0, y0, x1, y1) < 0 or max(x0, y0, x1, y1) > size:
        raise MaskError(f"rectangle {spec!r} lies outside the {size}x{size} image")
    if x1 <= x0 or y1 <= y0:
        raise MaskError(f"rectangle {spec!r} is empty: write x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    m = np.zeros((size, size), np.float32)
    m[int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))] = 1.0
    return m


def _read(spec: str | os.PathLike) -> np.ndarray:
    path = Path(spec)
    if not path.is_file():
        raise MaskError(
            f"mask {str(spec)!r} is neither an existing file (PNG/JPEG/.npy) nor a rectangle "
            f"'x0,y0,x1,y1' (pixels, or 0..1 fractions)"
        )
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.dtype == np.uint8:
            arr = arr / 255.0
        return np.asarray(arr, np.float32)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), np.float32) / 255.0
    except Exception as e:  # PIL raises several types for non-images
        raise MaskError(f"cannot read mask image {str(path)!r}: {e}") from e


def _feather(mask: torch.Tensor, radius: float) -> torch.Tensor:
    sigma = radius / 2
    k = torch.arange(-int(radius) * 2, int(radius) * 2 + 1, dtype=mask.dtype)
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = (g / g.sum()).to(mask.device)
    pad = len(k) // 2
    m = F.conv2d(F.pad(mask, (pad, pad, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(m, (0, 0, pad, pad), mode="replicate"), g.view(1, 1, -1, 1))


def load_mask(
    spec, size: int, feather: float = 0.0, allow_empty: bool = False, image: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[str]]:
    """A [1, 1, size, size] mask in [0, 1] and notes about what was done to it.

    spec: an image file (white = edit; read as grey levels), a .npy array ([H, W] or [1, H, W]; bool,
    0..1 floats or 0..255 uint8), a rectangle `"x0,y0,x1,y1"` in pixels or 0..1 fractions, an
    array/tensor, or bird parts `"part:body"` / `"part:body+wing"` (see `is_part_spec`), found by the
    part segmenter in `image` (the start image, [1, 3, H, W] or [3, H, W] in [-1, 1]; needed only for
    parts). A mask of another size is resized (noted). `feather` blurs the edge by that many pixels
    (soft edges). An all-zero mask is an error unless `allow_empty`."""
    notes: list[str] = []
    if is_part_spec(spec):
        arr, note = _part(spec, image, allow_empty)
        notes.append(note)
    elif isinstance(spec, str) and _RECT.match(spec):
        arr = _rectangle(spec, size)
    elif isinstance(spec, (str, os.PathLike)):
        arr = _read(spec)
    else:
        arr = spec.detach().cpu().float().numpy() if torch.is_tensor(spec) else np.asarray(spec, np.float32)
    arr = np.squeeze(np.asarray(arr, np.float32))
    if arr.ndim != 2:
        raise MaskError(f"mask must be 2-D (H x W), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MaskError("mask contains NaN or infinite values")
    if arr.min() < 0 or arr.max() > 1:
        raise MaskError(f"mask values must lie in [0, 1] (or 0..255 for 8-bit), got {arr.min()}..{arr.max()}")
    if not allow_empty and arr.max() == 0:
        raise MaskError("mask is empty (all black): nothing to edit. Paint the region to edit white (1).")
    mask = torch.from_numpy(arr)[None, None]
    if mask.shape[-2:] != (size, size):
        notes.append(f"mask was {arr.shape[0]}x{arr.shape[1]}, resized to the image's {size}x{size}")
        mode = "area" if min(arr.shape) > size else "bilinear"
        mask = F.interpolate(mask, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    if feather > 0:
        mask = _feather(mask, feather)
        notes.append(f"edges feathered by {feather} px")
    return mask.clamp(0, 1), notes


def mask_overlay(image: torch.Tensor, mask: torch.Tensor, color=None, alpha: float = 0.6) -> torch.Tensor:
    """The image ([B, 3, H, W] in [-1, 1]) with the mask shown, same range: darkened by `alpha` outside
    the mask (readable whatever the colors inside), or, given a `color`, tinted by it inside."""
    if color is None:
        return image + (-1 - image) * alpha * (1 - mask)
    tint = torch.tensor(color, device=image.device).view(1, 3, 1, 1) * 2 - 1
    a = alpha * mask
    return image * (1 - a) + tint * a
