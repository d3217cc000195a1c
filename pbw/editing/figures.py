"""Labelled pictures of images: panels upscaled by a whole factor (nearest neighbour, so each pixel
stays a crisp square) in a grid with column labels above, row labels on the left, a title and a
caption. `comparison_image` is an edit's strip (original | mask | edited); `panel_grid` any grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256  # a comparison panel's smallest side, in pixels
GAP = 6  # between panels and around the picture
PAD = 3  # around a line of text
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def upscale_factor(side: int, min_side: int) -> int:
    """The smallest whole factor that brings `side` to at least `min_side` (1 when it already is)."""
    return max(1, -(-min_side // side))


def to_pil(image: torch.Tensor) -> Image.Image:
    """An RGB picture of a [3, H, W], [1, H, W] or [1, 3, H, W] tensor in [0, 1], rounded as
    torchvision's save_image rounds (so its pixels are those of the PNGs saved next to it)."""
    x = image.detach().float().cpu()
    x = x[0] if x.ndim == 4 else x
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    return Image.fromarray(x.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def upscale(picture: Image.Image, factor: int) -> Image.Image:
    """`picture` with each pixel repeated as a `factor` x `factor` block."""
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at `size` px (older Pillow: its fixed-size bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sizes
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, fnt, width: int) -> list[str]:
    """`text` in lines no wider than `width` (a single word wider than that keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=fnt) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def panel_grid(
    rows: Sequence[Sequence[torch.Tensor]],
    column_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    title: str | None = None,
    caption: str | None = None,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """A grid of equally sized images (`rows` of [3, H, W] / [1, 3, H, W] tensors in [0, 1]), each upscaled
    by `upscale_factor` to at least `min_side` px a side; `column_labels` above the columns, `row_labels`
    left of the rows, `title` above and `caption` below the grid (both wrapped to its width)."""
    pictures = [[to_pil(x) for x in row] for row in rows]
    width, height = pictures[0][0].size
    if any(p.size != (width, height) for row in pictures for p in row):
        raise ValueError("the panels of a grid must all have the same size")
    k = upscale_factor(min(width, height), min_side)
    pw, ph = width * k, height * k
    fnt = font(max(12, min(pw, ph) // 16))
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = fnt.getbbox("Ag")[3] + 2 * PAD
    n_cols = max(len(row) for row in pictures)
    left = int(max(draw.textlength(t, font=fnt) for t in row_labels)) + 2 * PAD if row_labels else 0
    grid_w = n_cols * pw + (n_cols - 1) * GAP
    title_lines = _wrap(draw, title, fnt, left + grid_w) if title else []
    caption_lines = _wrap(draw, caption, fnt, left + grid_w) if caption else []
    top = GAP + len(title_lines) * line + (line if column_labels else 0)
    grid_h = len(pictures) * ph + (len(pictures) - 1) * GAP
    out = Image.new("RGB", (2 * GAP + left + grid_w, top + grid_h + len(caption_lines) * line + GAP), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(title_lines):
        draw.text((GAP + PAD, GAP + i * line + PAD), text, fill=INK, font=fnt)
    x0 = GAP + left
    for j, text in enumerate(column_labels):
        x = x0 + j * (pw + GAP) + (pw - draw.textlength(text, font=fnt)) / 2
        draw.text((x, top - line + PAD), text, fill=INK, font=fnt)
    for i, row in enumerate(pictures):
        y = top + i * (ph + GAP)
        if i < len(row_labels):
            draw.text((GAP + PAD, y + (ph - line) // 2 + PAD), row_labels[i], fill=INK, font=fnt)
        for j, p in enumerate(row):
            out.paste(upscale(p, k), (x0 + j * (pw + GAP), y))
    for i, text in enumerate(caption_lines):
        draw.text((GAP + PAD, top + grid_h + i * line + PAD), text, fill=INK, font=fnt)
    return out


def comparison_image(
    panels: Sequence[tuple[str, torch.Tensor]], caption: str | None = None, min_side: int = MIN_SIDE
) -> Image.Image:
    """One row of (label, image in [0, 1]) panels, each labelled above, with `caption` below."""
    return panel_grid([[x for _, x in panels]], [name for name, _ in panels], caption=caption, min_side=min_side)


def stack(pictures: Sequence[Image.Image]) -> Image.Image:
    """`pictures` one below the other, left-aligned, on the background."""
    out = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), BACKGROUND)
    y = 0
    for p in pictures:
        out.paste(p, (0, y))
        y += p.height
    return out
