"""Synthetic captioned birds in the CUB-200-2011 layout, with part masks and a pixel color oracle.

A miniature world with a ground truth: every bird is drawn from five parts (body, head, wing, tail,
beak), each filled with a color from a palette of well-separated named colors, on one of four
backgrounds (sky, grass, water, branch), with pose, size and position jitter. A dozen "species"
are color schemes with variation; they are the classes. Each image gets ten CUB-style captions
("this bird has a red head, blue wings and a white belly") and a part label map.

Layout written under ``--out``, as CUB-200-2011 and Reed et al.'s captions unpack::

    CUB_200_2011/images.txt, image_class_labels.txt, classes.txt, train_test_split.txt,
                 bounding_boxes.txt
    CUB_200_2011/images/<NNN.Class_Name>/<file>.png
    CUB_200_2011/part_masks/<NNN.Class_Name>/<file>.png   label map: 0 background, PART_LABELS[part]
    CUB_200_2011/synthetic_birds.json     palette, parts, species and per-image part colors
    text_c10/<NNN.Class_Name>/<file>.txt  ten captions, one per line

Run: ``python -m pbw.data.synthetic --out data/synthetic_birds --n 2000 --resolution 64 --seed 0``.

The pixel ORACLE that reads colors back from these images lives in :mod:`pbw.evaluation.oracle`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

# Named colors, pairwise at least ~90 apart in RGB so the oracle cannot confuse them.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 30),
    "orange": (240, 130, 20),
    "yellow": (240, 220, 40),
    "green": (40, 150, 50),
    "blue": (30, 60, 200),
    "purple": (120, 40, 160),
    "pink": (240, 130, 200),
    "brown": (110, 65, 25),
    "black": (25, 25, 25),
    "white": (240, 240, 240),
    "grey": (130, 130, 130),
}
PARTS: tuple[str, ...] = ("body", "head", "wing", "tail", "beak")
PART_LABELS: dict[str, int] = {p: i + 1 for i, p in enumerate(PARTS)}
# Words captions use for each part (the first is canonical); "wings" is plural.
PART_WORDS: dict[str, tuple[str, ...]] = {
    "body": ("belly", "body", "breast"),
    "head": ("head", "crown"),
    "wing": ("wings",),
    "tail": ("tail",),
    "beak": ("beak", "bill"),
}
BACKGROUNDS: tuple[str, ...] = ("sky", "grass", "water", "branch")

# Species: for each part the colors it may take (the first is the most common).
SPECIES: dict[str, dict[str, tuple[str, ...]]] = {
    "Red_Cardinal": {
        "body": ("red",),
        "head": ("red",),
        "wing": ("red", "brown"),
        "tail": ("red",),
        "beak": ("orange",),
    },
    "Blue_Jay": {
        "body": ("white",),
        "head": ("blue",),
        "wing": ("blue",),
        "tail": ("blue", "black"),
        "beak": ("black",),
    },
    "Yellow_Warbler": {
        "body": ("yellow",),
        "head": ("yellow",),
        "wing": ("yellow", "green"),
        "tail": ("yellow", "green"),
        "beak": ("black",),
    },
    "Green_Parrot": {
        "body": ("green",),
        "head": ("green", "red"),
        "wing": ("green", "blue"),
        "tail": ("green", "blue"),
        "beak": ("grey",),
    },
    "Black_Crow": {
        "body": ("black",),
        "head": ("black",),
        "wing": ("black",),
        "tail": ("black",),
        "beak": ("black", "grey"),
    },
    "White_Dove": {
        "body": ("white",),
        "head": ("white",),
        "wing": ("white", "grey"),
        "tail": ("white",),
        "beak": ("pink", "orange"),
    },
    "American_Robin": {
        "body": ("orange",),
        "head": ("grey", "black"),
        "wing": ("grey", "brown"),
        "tail": ("grey",),
        "beak": ("yellow",),
    },
    "Purple_Finch": {
        "body": ("pink",),
        "head": ("purple",),
        "wing": ("brown", "purple"),
        "tail": ("brown",),
        "beak": ("grey",),
    },
    "American_Goldfinch": {
        "body": ("yellow",),
        "head": ("black", "yellow"),
        "wing": ("black",),
        "tail": ("black",),
        "beak": ("orange",),
    },
    "Rosy_Finch": {
        "body": ("pink",),
        "head": ("pink", "grey"),
        "wing": ("pink",),
        "tail": ("pink", "brown"),
        "beak": ("black",),
    },
    "House_Sparrow": {
        "body": ("grey", "white"),
        "head": ("brown",),
        "wing": ("brown",),
        "tail": ("brown",),
        "beak": ("black", "grey"),
    },
    "Eastern_Bluebird": {
        "body": ("orange", "white"),
        "head": ("blue",),
        "wing": ("blue",),
        "tail": ("blue",),
        "beak": ("black",),
    },
}
CLASS_NAMES: tuple[str, ...] = tuple(f"{i + 1:03d}.{name}" for i, name in enumerate(SPECIES))
METADATA_FILE = "synthetic_birds.json"
CUB_DIR = "CUB_200_2011"


@dataclass(frozen=True)
class BirdSpec:
    """Everything that determines one drawn bird (the ground truth of one image)."""

    species: int
    part_colors: dict[str, str]
    background: str
    pose: str  # "perched" or "flying"
    size: float  # body length as a fraction of the image side
    center: tuple[float, float]  # body center, fractions of the image side
    tilt: float  # degrees
    facing_left: bool


# ----------------------------------------------------------------------------------------------
# Sampling


def sample_bird(rng: np.random.Generator, species: int, mutation_prob: float = 0.15) -> BirdSpec:
    """Draw the colors, pose and placement of one bird of a species."""
    scheme = SPECIES[CLASS_NAMES[species].split(".", 1)[1]]
    colors = {}
    for part in PARTS:
        options = scheme[part]
        colors[part] = options[0] if len(options) == 1 or rng.random() < 0.6 else str(rng.choice(options[1:]))
    if rng.random() < mutation_prob:  # rare variants: one part of any palette color
        colors[str(rng.choice(PARTS))] = str(rng.choice(list(PALETTE)))
    background = str(rng.choice(BACKGROUNDS))
    pose = "perched" if background in ("branch", "grass") else str(rng.choice(["perched", "flying"]))
    size = float(rng.uniform(0.36, 0.5))
    # the bird spans about [-0.9, 0.8] x [-0.75, 0.45] body lengths around its center
    mx, top, bottom = 0.85 * size + 0.02, 0.75 * size + 0.02 if pose == "flying" else 0.55 * size, 0.45 * size + 0.02
    center = (float(rng.uniform(mx, 1 - mx)), float(rng.uniform(top, 1 - bottom)))
    return BirdSpec(
        species, colors, background, pose, size, center, float(rng.uniform(-20, 20)), bool(rng.random() < 0.5)
    )


# ----------------------------------------------------------------------------------------------
# Drawing


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _bird_shapes(spec: BirdSpec, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Part polygons in bird coordinates (body length 1, facing +x, y down), in drawing order."""
    head_r = rng.uniform(0.19, 0.24)
    head = (rng.uniform(0.4, 0.48), rng.uniform(-0.34, -0.26))
    beak_len = rng.uniform(0.26, 0.34)
    tail_spread = rng.uniform(0.1, 0.2)
    tail_drop = rng.uniform(-0.15, 0.15)
    shapes = [
        (
            "tail",
            np.array([[-0.35, -0.08], [-0.35, 0.1], [-0.9, tail_drop + tail_spread], [-0.9, tail_drop - tail_spread]]),
        ),
        ("body", _ellipse(0.0, 0.0, 0.5, rng.uniform(0.27, 0.33))),
    ]
    if spec.pose == "perched":
        shapes.append(("wing", _ellipse(-0.08, -0.02, 0.38, 0.17, angle=rng.uniform(5, 20))))
    else:
        lift = rng.uniform(0.4, 0.6)
        shapes.append(
            ("wing", np.array([[0.2, -0.1], [-0.25, -0.05], [-0.35, -0.1 - lift], [0.05, -0.15 - 0.8 * lift]]))
        )
    shapes.append(("head", _ellipse(head[0], head[1], head_r, head_r)))
    bx = head[0] + 0.8 * head_r
    shapes.append(
        ("beak", np.array([[bx - 0.03, head[1] - 0.11], [bx - 0.03, head[1] + 0.1], [bx + beak_len, head[1] + 0.02]]))
    )
    shapes.append(("eye", _ellipse(head[0] + 0.3 * head_r, head[1] - 0.25 * head_r, 0.045, 0.045, n=12)))
    return shapes


def _background(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    y = np.linspace(0, 1, side)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 225]) + y * np.array([185, 215, 245]) + rng.uniform(-15, 15, 3)
    img = np.broadcast_to(sky, (side, side, 3)).copy()
    if kind == "grass":
        horizon = int(side * rng.uniform(0.3, 0.55))
        g = np.array([70, 150, 55]) + rng.uniform(-20, 20, 3)
        shade = np.linspace(1.0, 0.7, side - horizon)[:, None, None]
        img[horizon:] = g * shade + rng.normal(0, 10, (side - horizon, side, 1))
    elif kind == "water":
        horizon = int(side * rng.uniform(0.3, 0.55))
        w = np.array([35, 100, 150]) + rng.uniform(-15, 15, 3)
        rows = np.arange(side - horizon)[:, None, None]
        waves = 18 * np.sin(
            rows * rng.uniform(0.15, 0.3) + np.linspace(0, 6, side)[None, :, None] * rng.uniform(0.5, 1.5)
        )
        img[horizon:] = w + waves
    elif kind == "branch":
        if rng.random() < 0.5:  # a blurry leafy backdrop
            coarse = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
            blob = np.asarray(coarse, dtype=np.float64)[..., None] / 255 - 0.5
            img = np.array([60, 120, 60]) + 60 * blob + rng.uniform(-15, 15, 3)
    if kind == "sky" or (kind == "branch" and img.ndim == 3 and rng.random() < 0.5 and img[0, 0, 2] > 150):
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(rng.integers(1, 4)):  # clouds
            cx, cy, r = rng.uniform(0, side), rng.uniform(0, 0.5 * side), rng.uniform(0.06, 0.14) * side
            for dx in (-r, 0, r):
                draw.ellipse([cx + dx - r, cy - 0.6 * r, cx + dx + r, cy + 0.6 * r], fill=(245, 247, 250))
        img = np.asarray(pil, dtype=np.float64)
    return img


def render_bird(
    spec: BirdSpec,
    resolution: int,
    rng: np.random.Generator,
    supersample: int = 4,
    omit: tuple[str, ...] = (),
    scatter: float = 0.0,
    rgb: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one bird; returns (RGB uint8 [R,R,3], part label map uint8 [R,R]).

    For judges that must not see a bird where there is none (`pbw.evaluation.segmenter`): `omit`
    leaves parts out (the head takes its eye along), `scatter` > 0 moves each part by up to that many
    body lengths on its own, breaking the bird apart. `rgb` paints the parts it names in those colors
    instead of their palette colors (CLIP's off-palette birds, `pbw.data.fresh_birds`). The defaults
    draw the dataset's birds."""
    side = resolution * supersample
    canvas = Image.fromarray(np.clip(_background(spec.background, side, rng), 0, 255).astype(np.uint8))
    labels = Image.new("L", (side, side), 0)
    draw, ldraw = ImageDraw.Draw(canvas), ImageDraw.Draw(labels)

    scale = spec.size * side
    angle = math.radians(spec.tilt)
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    flip = np.array([-1.0, 1.0]) if spec.facing_left else np.array([1.0, 1.0])
    origin = np.array(spec.center) * side

    def to_pixels(pts: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in ((pts @ rot) * flip * scale + origin)]

    if spec.background == "branch" or spec.pose == "perched":
        feet_y = origin[1] + 0.32 * scale
        for dx in (-0.08, 0.08):  # legs
            x = origin[0] + dx * scale
            draw.line(
                [(x, feet_y - 0.1 * scale), (x, feet_y + 0.08 * scale)], fill=(60, 45, 30), width=max(1, supersample)
            )
        if spec.background == "branch":
            y0, slope = feet_y + 0.08 * scale, rng.uniform(-0.15, 0.15)
            width = int(rng.uniform(0.05, 0.09) * side)
            draw.line(
                [(0, y0 - slope * origin[0]), (side, y0 + slope * (side - origin[0]))], fill=(85, 55, 30), width=width
            )

    offsets = {p: rng.uniform(-scatter, scatter, 2) for p in PARTS} if scatter > 0 else {}
    for part, pts in _bird_shapes(spec, rng):
        owner = "head" if part == "eye" else part
        if owner in omit:
            continue
        poly = to_pixels(pts + offsets.get(owner, 0.0))
        if part == "eye":
            draw.polygon(poly, fill=(10, 10, 10))
            continue
        base = np.array(rgb[part] if rgb and part in rgb else PALETTE[spec.part_colors[part]], dtype=np.float64)
        color = np.clip(base * rng.uniform(0.92, 1.06) + rng.normal(0, 6, 3), 0, 255)
        draw.polygon(poly, fill=tuple(int(c) for c in color))
        ldraw.polygon(poly, fill=PART_LABELS[part])

    image = np.asarray(canvas.resize((resolution, resolution), Image.BOX), dtype=np.float64)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    # each output pixel takes the label covering most of its supersampled block
    blocks = np.asarray(labels).reshape(resolution, supersample, resolution, supersample)
    coverage = np.stack([(blocks == v).sum(axis=(1, 3)) for v in range(len(PARTS) + 1)])
    label_map = coverage.argmax(0).astype(np.uint8)
    return image, label_map


# ----------------------------------------------------------------------------------------------
# Captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(part: str, color: str, rng: np.random.Generator) -> str:
    noun = str(rng.choice(PART_WORDS[part]))
    return f"{color} {noun}" if noun.endswith("s") else f"{_article(color)} {color} {noun}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def make_captions(spec: BirdSpec, rng: np.random.Generator, n: int = 10) -> list[str]:
    """CUB-style captions naming the colors of the bird's parts (varied templates and subsets)."""
    size = "small" if spec.size < 0.41 else ("large" if spec.size > 0.45 else "medium-sized")
    scene = {
        "sky": "flying in the sky" if spec.pose == "flying" else "against the sky",
        "grass": "standing in the grass",
        "water": "over the water" if spec.pose == "flying" else "by the water",
        "branch": "perched on a branch",
    }[spec.background]
    c = spec.part_colors
    templates = [
        lambda ps: f"this bird has {ps}.",
        lambda ps: f"a bird with {ps}.",
        lambda ps: f"this {size} bird has {ps}.",
        lambda ps: f"a {size} bird {scene} with {ps}.",
        lambda ps: f"this is a {c['body']} bird with {ps}.",
        lambda ps: f"the bird is mostly {c['body']} and has {ps}.",
        lambda ps: f"{ps} distinguish this bird.",
        lambda ps: f"a {c['head']}-headed bird with {ps}.",
    ]
    captions = []
    for k in range(n):
        parts = list(rng.permutation(PARTS))[: int(rng.integers(2, 5)) if k else len(PARTS)]
        if k % 4 == 3:  # possessive form: "its head is red, and its wings are blue."
            clauses = [
                f"its {w} {'are' if w.endswith('s') else 'is'} {c[p]}"
                for p in parts
                for w in [str(rng.choice(PART_WORDS[p]))]
            ]
            captions.append(f"this bird is {size}; " + _join(clauses) + ".")
            continue
        captions.append(templates[int(rng.integers(len(templates)))](_join([_phrase(p, c[p], rng) for p in parts])))
    return captions


def part_caption(part_colors: dict[str, str], parts: tuple[str, ...], rng: np.random.Generator) -> str:
    """A caption naming only the given parts' colors, in the words of edit prompts ("a bird with a red
    body"): what CLIP is asked about a view that shows those parts alone."""
    phrases = _join([_phrase(p, part_colors[p], rng) for p in parts])
    template = ("a bird with {}", "a bird with {}.", "this bird has {}.", "{}")[int(rng.integers(4))]
    return template.format(phrases)


def canonical_caption(part_colors: dict[str, str], parts: tuple[str, ...] = PARTS) -> str:
    """The fixed-template caption naming the given parts' colors (for retrieval tests and prompts)."""
    return (
        "this bird has "
        + _join(
            [
                f"{part_colors[p]} {PART_WORDS[p][0]}"
                if PART_WORDS[p][0].endswith("s")
                else f"{_article(part_colors[p])} {part_colors[p]} {PART_WORDS[p][0]}"
                for p in parts
            ]
        )
        + "."
    )


# ----------------------------------------------------------------------------------------------
# Drawing in memory (fresh birds for training and evaluation, no files)

COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)
PALETTE_RGB: np.ndarray = np.array([PALETTE[c] for c in COLOR_NAMES], dtype=np.float64)  # rows: COLOR_NAMES


@dataclass(frozen=True)
class DrawnBirds:
    """Birds drawn in memory: ``images`` uint8 [N,R,R,3], ``part_maps`` uint8 [N,R,R] (0 background,
    ``PART_LABELS``), ``species`` int64 [N] (0..11) and ``part_colors`` int64 [N, len(PARTS)] (indices
    into ``COLOR_NAMES``, parts in ``PARTS`` order)."""

    images: np.ndarray
    part_maps: np.ndarray
    species: np.ndarray
    part_colors: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def tensors(self) -> torch.Tensor:
        """The images as float [N,3,R,R] in [-1, 1] (the batch format of ``pbw.data.common``)."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 127.5 - 1


def draw_bird(
    seed: int, index: int, resolution: int = 64, mutation_prob: float = 0.15
) -> tuple[np.ndarray, np.ndarray, BirdSpec, np.random.Generator]:
    """Bird ``index`` of the world ``seed``: (image uint8 [R,R,3], part map uint8 [R,R], spec, rng).

    The same bird as image ``index`` of ``generate(seed=seed, resolution=resolution)`` (species
    ``index % 12``); the returned rng continues where the drawing left it (captions come next)."""
    rng = np.random.default_rng((seed, index))
    spec = sample_bird(rng, index % len(CLASS_NAMES), mutation_prob)
    image, label_map = render_bird(spec, resolution, rng)
    return image, label_map, spec, rng


def draw_birds(
    n: int, resolution: int = 64, seed: int = 0, start: int = 0, mutation_prob: float = 0.15, progress: bool = False
) -> DrawnBirds:
    """Birds ``start .. start + n - 1`` of the world ``seed``, drawn in memory (see `draw_bird`)."""
    images = np.empty((n, resolution, resolution, 3), np.uint8)
    maps = np.empty((n, resolution, resolution), np.uint8)
    species = np.empty(n, np.int64)
    colors = np.empty((n, len(PARTS)), np.int64)
    for k in tqdm(range(n), desc="drawing birds", disable=not progress):
        images[k], maps[k], spec, _ = draw_bird(seed, start + k, resolution, mutation_prob)
        species[k] = spec.species
        colors[k] = [COLOR_NAMES.index(spec.part_colors[p]) for p in PARTS]
    return DrawnBirds(images, maps, species, colors)


# ----------------------------------------------------------------------------------------------
# Dataset writing


def generate(
    out: str | Path,
    n: int = 2000,
    resolution: int = 64,
    seed: int = 0,
    test_fraction: float = 0.2,
    mutation_prob: float = 0.15,
    image_format: str = "png",
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic birds in the CUB_200_2011 layout under ``out``; deterministic by ``seed``.

    Image ``i`` depends only on ``(seed, i)``, so a larger ``n`` extends a smaller dataset.
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if n < 1 or resolution < 16:
        raise ValueError(f"need n >= 1 and resolution >= 16, got n={n}, resolution={resolution}")
    root = Path(out)
    cub = root / CUB_DIR
    for sub in (cub / "images", cub / "part_masks", root / "text_c10"):
        for cls in CLASS_NAMES:
            (sub / cls).mkdir(parents=True, exist_ok=True)

    rows: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes")}
    per_image = {}
    counts = [0] * len(CLASS_NAMES)
    for i in tqdm(range(n), desc="drawing birds", disable=not progress):
        rng = np.random.default_rng((seed, i))
        species = i % len(CLASS_NAMES)
        counts[species] += 1
        spec = sample_bird(rng, species, mutation_prob)
        image, label_map = render_bird(spec, resolution, rng)
        cls = CLASS_NAMES[species]
        stem = f"{cls.split('.', 1)[1]}_{counts[species]:04d}"
        rel = f"{cls}/{stem}.{image_format}"
        Image.fromarray(image).save(cub / "images" / rel, **({"quality": 95} if image_format == "jpg" else {}))
        Image.fromarray(label_map).save(cub / "part_masks" / cls / f"{stem}.png")
        (root / "text_c10" / cls / f"{stem}.txt").write_text("\n".join(make_captions(spec, rng)) + "\n")

        image_id = i + 1
        ys, xs = np.nonzero(label_map)
        rows["images"].append(f"{image_id} {rel}")
        rows["labels"].append(f"{image_id} {species + 1}")
        rows["split"].append(f"{image_id} {int(rng.random() >= test_fraction)}")
        rows["boxes"].append(
            f"{image_id} {xs.min():.1f} {ys.min():.1f} {xs.max() - xs.min() + 1:.1f} {ys.max() - ys.min() + 1:.1f}"
        )
        per_image[str(image_id)] = {
            "file": rel,
            "part_colors": spec.part_colors,
            "background": spec.background,
            "pose": spec.pose,
            "size": round(spec.size, 4),
            "facing_left": spec.facing_left,
        }

    for name, key in (
        ("images.txt", "images"),
        ("image_class_labels.txt", "labels"),
        ("train_test_split.txt", "split"),
        ("bounding_boxes.txt", "boxes"),
    ):
        (cub / name).write_text("\n".join(rows[key]) + "\n")
    (cub / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASS_NAMES)))
    meta = {
        "generator": "pbw.data.synthetic",
        "seed": seed,
        "n": n,
        "resolution": resolution,
        "palette": PALETTE,
        "part_labels": PART_LABELS,
        "part_words": PART_WORDS,
        "backgrounds": BACKGROUNDS,
        "species": {cls: SPECIES[cls.split(".", 1)[1]] for cls in CLASS_NAMES},
        "images": per_image,
    }
    (cub / METADATA_FILE).write_text(json.dumps(meta, indent=1))
    return root


def _cub_dir(root: str | Path) -> Path:
    root = Path(root)
    return root / CUB_DIR if (root / CUB_DIR).is_dir() else root


def load_metadata(root: str | Path) -> dict:
    """Read ``synthetic_birds.json`` (palette, parts, species, per-image part colors) of a dataset.

    ``root`` is the dataset root given to :func:`generate` or its ``CUB_200_2011`` folder.
    """
    path = _cub_dir(root) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {root} is not a synthetic birds dataset; "
            f"make one with `python -m pbw.data.synthetic --out {root}`"
        )
    return json.loads(path.read_text())


def load_part_map(root: str | Path, image_file: str) -> np.ndarray:
    """The part label map (uint8 [H,W]) of an image given by its ``images.txt`` path."""
    return np.asarray(Image.open(_cub_dir(root) / "part_masks" / Path(image_file).with_suffix(".png")))


def load_split(
    root: str | Path, split: str = "test", limit: int | None = None
) -> tuple[torch.Tensor, list[dict[str, str]], list[str]]:
    """Images ([N,3,R,R] in [-1,1]), ground-truth part colors and ``images.txt`` paths of a split
    ("train", "test" or "all"), in image-id order, at most ``limit`` of them."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    meta, cub = load_metadata(root), _cub_dir(root)
    flags = dict(line.split() for line in (cub / "train_test_split.txt").read_text().splitlines())
    ids = [i for i in meta["images"] if split == "all" or flags[i] == ("1" if split == "train" else "0")][:limit]
    files = [meta["images"][i]["file"] for i in ids]
    images = np.stack([np.asarray(Image.open(cub / "images" / f).convert("RGB")) for f in files])
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return tensor, [meta["images"][i]["part_colors"] for i in ids], files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw synthetic captioned birds in the CUB-200-2011 layout.")
    parser.add_argument("--out", required=True, help="output dataset root")
    parser.add_argument("--n", type=int, default=2000, help="number of images")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument(
        "--mutation-prob", type=float, default=0.15, help="probability that one part of a bird takes any palette color"
    )
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate(args.out, args.n, args.resolution, args.seed, args.test_fraction, args.mutation_prob, args.format)
    print(f"wrote {args.n} birds at {args.resolution} px to {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
