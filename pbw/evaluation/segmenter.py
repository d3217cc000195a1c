"""The mini world's part segmenters: tiny U-Nets trained on the synthetic birds' part maps
(background + body, head, wing, tail, beak) that work on generated images too. Two are bundled
(`pbw.assets.mini_segmenter_path(kind)`), one net trained two ways:

- ``judge``: the *bird rate* of a generator, the share of its samples in which the segmenter finds a
  whole bird, every part present with a plausible size (`is_whole_bird`, `bird_rate`, `bird_rate_of`).
  Plausible = the part's share of the image's pixels lies in [`LOW_FACTOR` x its 1st percentile,
  `HIGH_FACTOR` x its 99th percentile] over real birds' part maps (measured when the segmenter is
  trained and stored with its weights). So that it does not see a bird where there is none, it also
  trains on `NEGATIVES`: birds missing parts, birds broken apart, colored blobs.
  ``python -m pbw.evaluation.segmenter train --out pbw/assets/mini/segmenter.safetensors``
- ``masks``: masks that follow the bird, `part_mask(image, "body+wing")` (behind ``--mask part:body``
  in pbw-edit, see `pbw.editing.masks`). Trained on real birds only, it finds the parts of anything
  bird-like, so it also masks the body of a generator's imperfect bird, where the judge sees none.
  ``python -m pbw.evaluation.segmenter train --no-negatives --out pbw/assets/mini/segmenter_masks.safetensors``

It sees every image at 64 px (`pbw.evaluation.birdnets`) and answers at the image's own resolution.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from pbw.data.synthetic import (
    BACKGROUNDS,
    PALETTE,
    PART_LABELS,
    PART_WORDS,
    PARTS,
    DrawnBirds,
    _background,
    draw_birds,
    render_bird,
    sample_bird,
)
from pbw.evaluation.birdnets import (
    WORK_RESOLUTION,
    BirdBatches,
    accuracy_entry,
    conv_block,
    load_net,
    save_net,
    to_work,
    train_loop,
)
from pbw.evaluation.oracle import nearest_color

LABELS: tuple[str, ...] = ("background", *PARTS)  # label v of a part map names LABELS[v]
TRAIN_SEED, HELDOUT_SEED = 200, 201
LOW_FACTOR, HIGH_FACTOR = 0.5, 1.5  # plausible part size: [LOW x 1st percentile, HIGH x 99th percentile]
# What the segmenter also trains on, as shares of its real birds, so that it does not see a bird where there
# is none: birds missing one or two parts (only the drawn parts labelled), birds broken apart (every part
# moved on its own: all background) and colored blobs (all background).
NEGATIVES = {"missing": 0.2, "scattered": 0.1, "blobs": 0.1}


class SegmenterNet(nn.Module):
    """Images [B,3,H,W] in [-1,1] -> part logits [B,6,64,64] (`LABELS` order) at the work resolution.

    A U-Net from 32 x 32 down to 4 x 4 (context: which ellipse is the head) and back, its 32 x 32
    output upsampled and fused (1x1) with one full-resolution conv's features for sharp part edges."""

    def __init__(self, width: int = 16, n_labels: int = len(LABELS)):
        super().__init__()
        c = width
        self.full = conv_block(3, c // 2)  # 64
        self.e1 = nn.Sequential(conv_block(3, c, 2, kernel=4), conv_block(c, c))  # 32
        self.e2 = nn.Sequential(conv_block(c, 2 * c, 2), conv_block(2 * c, 2 * c))  # 16
        self.e3 = nn.Sequential(conv_block(2 * c, 3 * c, 2), conv_block(3 * c, 3 * c))  # 8
        self.e4 = nn.Sequential(conv_block(3 * c, 4 * c, 2), conv_block(4 * c, 4 * c))  # 4
        self.d3 = conv_block(7 * c, 3 * c)
        self.d2 = conv_block(5 * c, 2 * c)
        self.d1 = conv_block(3 * c, c)
        self.fuse = conv_block(c + c // 2, c, kernel=1)
        self.head = nn.Conv2d(c, n_labels, 1)

    @staticmethod
    def _up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_work(images, WORK_RESOLUTION)
        x1 = self.e1(x)
        x2 = self.e2(x1)
        x3 = self.e3(x2)
        y = self.d3(self._up(self.e4(x3), x3))
        y = self.d2(self._up(y, x2))
        y = self.d1(self._up(y, x1))
        return self.head(self.fuse(self._up(y, self.full(x))))


def load_segmenter(path: str | Path | None = None, kind: str = "judge") -> SegmenterNet:
    """The segmenter at `path` (default: the bundled one of `kind`, "judge" or "masks"), in eval mode;
    its `info` attribute holds what its trainer measured, including the plausible part sizes
    (`share_ranges`)."""
    if path is None:
        return _bundled(kind)
    net, info = load_net(SegmenterNet, path)
    net.info = info
    return net


@functools.lru_cache(maxsize=2)
def _bundled(kind: str) -> SegmenterNet:
    from pbw.assets import mini_segmenter_path

    return load_segmenter(mini_segmenter_path(kind))


# ------------------------------------------------------------------------------------------ segmenting


@torch.no_grad()
def segment(images: torch.Tensor, net: SegmenterNet | None = None, batch_size: int = 128) -> torch.Tensor:
    """Part label maps (int64 [B,H,W], values index `LABELS`) of images [B,3,H,W] in [-1, 1], at the
    images' resolution (logits resized from the work resolution: area when shrinking)."""
    net = net or load_segmenter()
    if images.ndim == 3:
        images = images[None]
    size = images.shape[-2:]
    out = []
    for i in range(0, len(images), batch_size):
        logits = net(images[i : i + batch_size].float().to(next(net.parameters()).device))
        if logits.shape[-2:] != size:
            shrink = size[0] < logits.shape[-2]
            logits = F.interpolate(
                logits, size=size, mode="area" if shrink else "bilinear", **({} if shrink else {"align_corners": False})
            )
        out.append(logits.argmax(1).cpu())
    return torch.cat(out)


def parse_parts(spec: str | Sequence[str]) -> list[str]:
    """Part names from "body", "body+wing" or a list; caption words are accepted ("wings", "belly",
    "bill"...). An unknown name is a ValueError listing the parts."""
    names = spec.split("+") if isinstance(spec, str) else list(spec)
    alias = {w: p for p, words in PART_WORDS.items() for w in words}
    parts = []
    for name in (n.strip().lower() for n in names):
        part = name if name in PARTS else alias.get(name)
        if part is None:
            raise ValueError(
                f"unknown bird part {name!r}; the parts are {', '.join(PARTS)} "
                f"(several joined by '+', e.g. part:body+wing)"
            )
        if part not in parts:
            parts.append(part)
    if not parts:
        raise ValueError(f"no part named; the parts are {', '.join(PARTS)}")
    return parts


def part_mask(image: torch.Tensor, parts: str | Sequence[str], net: SegmenterNet | None = None) -> torch.Tensor:
    """A float [H,W] mask (1 = the parts) of one image ([3,H,W] or [1,3,H,W] in [-1, 1]): where the
    segmenter (default: the bundled "masks" one) finds the named parts ("body", "body+wing", a list),
    with the background they enclose (specks the segmenter missed). The body includes a wing of the
    body's own color (`wing_is_body_colored`): a person sees one body there."""
    image = image if image.ndim == 4 else image[None]
    lm = segment(image, net or load_segmenter(kind="masks"))[0]
    names = parse_parts(parts)
    mask = torch.isin(lm, torch.tensor([PART_LABELS[p] for p in names]))
    if "body" in names and wing_is_body_colored(lm, image[0]):
        mask |= lm == PART_LABELS["wing"]
    return (mask | (fill_holes(mask) & (lm == 0))).float()


def wing_is_body_colored(label_map: torch.Tensor, image: torch.Tensor) -> bool:
    """Whether the wing of `label_map` ([H,W]) has the body's color in `image` ([3,H,W] in [-1, 1]): the
    median colors of both regions snap to the same palette color. The segmenter learned that a wing lies
    over the middle of the body and marks one there even where a generated bird shows none, so without
    it the body would be a ring around a middle of its own color."""
    body, wing = label_map == PART_LABELS["body"], label_map == PART_LABELS["wing"]
    if not (body.any() and wing.any()):
        return False
    rgb = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0)
    return nearest_color(rgb[body].median(0).values.numpy())[0] == nearest_color(rgb[wing].median(0).values.numpy())[0]


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """A bool [H,W] mask with its holes (regions not reachable from the border outside it) filled."""
    outside = Image.fromarray(np.pad(mask.numpy(), 1).astype(np.uint8)).copy()  # a copy: writable
    ImageDraw.floodfill(outside, (0, 0), 2)  # 4-connected from the padded border
    return torch.from_numpy(np.asarray(outside)[1:-1, 1:-1] != 2)


# ------------------------------------------------------------------------------------------ bird rate


def part_shares(label_maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Each part's share of the pixels ([N, 5], `PARTS` order) of part label maps [N,H,W]."""
    lm = np.asarray(label_maps)
    return np.stack([(lm == PART_LABELS[p]).mean(axis=(1, 2)) for p in PARTS], 1)


def share_ranges(
    label_maps: np.ndarray, low_factor: float = LOW_FACTOR, high_factor: float = HIGH_FACTOR
) -> dict[str, list[float]]:
    """The plausible share of the image for each part, from real birds' part maps: [low_factor x
    1st percentile, high_factor x 99th percentile]."""
    shares = part_shares(label_maps)
    lo, hi = np.percentile(shares, 1, axis=0), np.percentile(shares, 99, axis=0)
    return {p: [float(low_factor * lo[j]), float(high_factor * hi[j])] for j, p in enumerate(PARTS)}


def is_whole_bird(label_maps: torch.Tensor | np.ndarray, ranges: dict[str, list[float]]) -> np.ndarray:
    """bool [N, 6]: per image, whether each part's share lies in its plausible range (columns in
    `PARTS` order), and in the last column whether all of them do (a whole bird)."""
    shares = part_shares(label_maps)
    ok = np.stack([(shares[:, j] >= ranges[p][0]) & (shares[:, j] <= ranges[p][1]) for j, p in enumerate(PARTS)], 1)
    return np.concatenate([ok, ok.all(1, keepdims=True)], 1)


def bird_rate(images: torch.Tensor, net: SegmenterNet | None = None) -> dict:
    """The share of images [N,3,H,W] in [-1, 1] in which the segmenter finds a whole bird (95% Wilson
    interval), and per part the share in which that part has a plausible size."""
    net = net or load_segmenter()
    ok = is_whole_bird(segment(images, net), net.info["share_ranges"])
    return {**accuracy_entry(ok[:, -1]), "per_part": {p: float(ok[:, j].mean()) for j, p in enumerate(PARTS)}}


@torch.no_grad()
def bird_rate_of(
    generator, n: int = 256, seed: int = 0, net: SegmenterNet | None = None, batch_size: int = 64, **sample_kwargs
) -> dict:
    """The bird rate of `n` samples of a `MaskableGenerator` (codes from sample seed `seed`)."""
    codes = generator.sample(n, seed=seed, **sample_kwargs)
    images = []
    for i in range(0, n, batch_size):
        c = {k: v[i : i + batch_size] for k, v in codes.items()}
        images.append(generator.decode(generator.encode(c), cond=c).cpu())
    return bird_rate(torch.cat(images), net)


# ------------------------------------------------------------------------------------------ training


def iou(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Per-part intersection over union of label maps, pooled over all images."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    out = {}
    for p in PARTS:
        a, b = pred == PART_LABELS[p], truth == PART_LABELS[p]
        out[p] = float((a & b).sum() / max((a | b).sum(), 1))
    return out


def evaluate_on(net: SegmenterNet, birds: DrawnBirds) -> dict:
    """Per-part IoU and the bird rate (with the net's share ranges) on drawn birds."""
    maps = segment(birds.tensors(), net)
    return {"iou": iou(maps, birds.part_maps), "bird_rate": bird_rate(birds.tensors(), net)}


def evaluate(net: SegmenterNet, n: int = 600, seed: int = HELDOUT_SEED) -> dict:
    """IoU and bird rate on `n` held-out birds of world `seed`, drawn at 64 px and at 32 px, and the
    bird rate of `n // 4` held-out images of each kind of `NEGATIVES` (32 px: should be ~0)."""
    out = {f"{r}px": evaluate_on(net, draw_birds(n, r, seed=seed)) for r in (64, 32)}
    out["negatives_32px"] = {
        kind: bird_rate(draw_negatives(n // 4, kind, 32, seed).tensors(), net) for kind in NEGATIVES
    }
    return out


def draw_blobs(resolution: int, rng: np.random.Generator, supersample: int = 4) -> np.ndarray:
    """A background of the bird world with 1-3 palette-colored ellipses or polygons (sometimes with an
    eye-like dot) that are not a bird: uint8 [R,R,3]."""
    side = resolution * supersample
    canvas = Image.fromarray(np.clip(_background(str(rng.choice(BACKGROUNDS)), side, rng), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    colors = list(PALETTE.values())
    for _ in range(int(rng.integers(1, 4))):
        color = np.clip(np.array(colors[int(rng.integers(len(colors)))]) * rng.uniform(0.92, 1.06), 0, 255)
        cx, cy = rng.uniform(0.2, 0.8, 2) * side
        rx, ry = rng.uniform(0.05, 0.3, 2) * side
        if rng.random() < 0.5:
            t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            pts = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]
        else:
            a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
            rot = rng.uniform(0, np.pi)
            pts = [
                (
                    cx + rx * np.cos(u) * np.cos(rot) - ry * np.sin(u) * np.sin(rot),
                    cy + rx * np.cos(u) * np.sin(rot) + ry * np.sin(u) * np.cos(rot),
                )
                for u in a
            ]
        draw.polygon(pts, fill=tuple(int(c) for c in color))
        if rng.random() < 0.3:
            r = 0.02 * side
            ex, ey = cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.5, 0.5) * ry
            draw.ellipse([ex - r, ey - r, ex + r, ey + r], fill=(10, 10, 10))
    image = np.asarray(canvas.resize((resolution, resolution), Image.BOX), dtype=np.float64)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def draw_negatives(n: int, kind: str, resolution: int = WORK_RESOLUTION, seed: int = 0) -> DrawnBirds:
    """`n` images that hold no whole bird (`NEGATIVES`' kinds) with their part maps; species and part
    colors are -1."""
    images = np.empty((n, resolution, resolution, 3), np.uint8)
    maps = np.zeros((n, resolution, resolution), np.uint8)
    for k in range(n):
        rng = np.random.default_rng((seed, 17, list(NEGATIVES).index(kind), k))
        if kind == "blobs":
            images[k] = draw_blobs(resolution, rng)
            continue
        spec = sample_bird(rng, k % 12)
        if kind == "missing":
            omit = tuple(str(p) for p in rng.choice(PARTS, size=int(rng.integers(1, 3)), replace=False))
            images[k], maps[k] = render_bird(spec, resolution, rng, omit=omit)
        else:
            images[k], _ = render_bird(spec, resolution, rng, scatter=float(rng.uniform(0.35, 0.7)))
    return DrawnBirds(images, maps, -np.ones(n, np.int64), -np.ones((n, len(PARTS)), np.int64))


def concat_birds(parts: Sequence[DrawnBirds]) -> DrawnBirds:
    return DrawnBirds(
        *(np.concatenate([getattr(b, f) for b in parts]) for f in ("images", "part_maps", "species", "part_colors"))
    )


def train_segmenter(
    out: str | Path,
    n: int = 3000,
    steps: int = 2500,
    batch_size: int = 16,
    lr: float = 3e-3,
    width: int = 16,
    seed: int = TRAIN_SEED,
    heldout: int = 600,
    heldout_seed: int = HELDOUT_SEED,
    negatives: bool = True,
    log=print,
) -> dict:
    """Draw `n` birds of world `seed` (64 px) and the `NEGATIVES`, train the segmenter `steps` steps
    (cross-entropy weighted by 1/sqrt(label frequency), at 64 px and as answered at 32 px), measure the plausible part sizes on the training birds' part
    maps, evaluate on `heldout` birds of world `heldout_seed`, write it to `out`; returns its info."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    real = draw_birds(n, WORK_RESOLUTION, seed=seed, progress=True)
    mix = {kind: int(round(share * n)) for kind, share in NEGATIVES.items()} if negatives else {}
    birds = concat_birds([real] + [draw_negatives(k, kind, seed=seed) for kind, k in mix.items()])
    draw_s = time.perf_counter() - t0
    freq = np.bincount(birds.part_maps.ravel(), minlength=len(LABELS)) / birds.part_maps.size
    weight = torch.tensor(1 / np.sqrt(freq), dtype=torch.float32)
    weight = weight / (weight * torch.tensor(freq, dtype=torch.float32)).sum()

    def loss_fn(net, batch):
        x, maps, _, _ = batch
        logits = net(x)
        ce64 = F.cross_entropy(logits, maps, weight=weight)
        # and as `segment` answers for a 32 px image: area-downsampled logits vs the 2 x 2 majority label
        maps32 = F.avg_pool2d(F.one_hot(maps, len(LABELS)).permute(0, 3, 1, 2).float(), 2).argmax(1)
        ce32 = F.cross_entropy(F.avg_pool2d(logits, 2), maps32, weight=weight)
        return ce64 + ce32, {"ce64": ce64.detach(), "ce32": ce32.detach()}

    config = {"width": width}
    net = SegmenterNet(**config)
    train_s = train_loop(net, iter(BirdBatches(birds, batch_size, seed)), loss_fn, steps, lr, log=log)
    net.info = {
        "share_ranges": share_ranges(real.part_maps),
        "share_ranges_rule": f"[{LOW_FACTOR} x 1st percentile, {HIGH_FACTOR} x 99th percentile] of each "
        f"part's pixel share over the {n} training birds' part maps",
    }
    info = {
        **net.info,
        "trained_on": {"n": n, "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "negatives": mix},
        "seconds": {"draw": round(draw_s, 1), "train": round(train_s, 1)},
        "heldout_seed": heldout_seed,
        "heldout": evaluate(net, heldout, heldout_seed),
    }
    size = save_net(net, out, config, info)
    log(f"wrote {out} ({size / 1024:.0f} KiB)")
    return info


def summary(results: dict) -> str:
    """Held-out IoU and bird rates as text lines."""
    lines = []
    for res, e in results.get("heldout", results).items():
        if res.startswith("negatives"):
            lines.append(
                f"bird rate of {res.replace('_', ' ')}: "
                + ", ".join(f"{kind} {r['value']:.3f} (n={r['n']})" for kind, r in e.items())
            )
            continue
        r = e["bird_rate"]
        lines.append(
            f"{res}: IoU "
            + ", ".join(f"{p} {v:.3f}" for p, v in e["iou"].items())
            + f"; bird rate {r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] (n={r['n']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m pbw.evaluation.segmenter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a segmenter on fresh birds and write its weights")
    t.add_argument("--out", required=True, help="weights file (.safetensors)")
    t.add_argument("--n", type=int, default=3000, help="birds drawn for training (and 40%% more negatives)")
    t.add_argument("--steps", type=int, default=2500)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--seed", type=int, default=TRAIN_SEED)
    t.add_argument("--heldout", type=int, default=600)
    t.add_argument(
        "--no-negatives",
        dest="negatives",
        action="store_false",
        help="train on real birds only (the mask segmenter: it finds parts in anything bird-like)",
    )
    e = sub.add_parser("evaluate", help="held-out IoU and bird rate of real birds")
    e.add_argument("--weights", default=None, help="default: the bundled segmenter")
    e.add_argument("--n", type=int, default=600)
    e.add_argument("--seed", type=int, default=HELDOUT_SEED)
    s = sub.add_parser("score", help="bird rate of a generator's samples")
    s.add_argument("--generator", default=None, help="checkpoint (default: the bundled mini StyleGAN2)")
    s.add_argument("--weights", default=None)
    s.add_argument("--n", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.command == "train":
        print(
            summary(
                train_segmenter(
                    args.out,
                    args.n,
                    args.steps,
                    args.batch_size,
                    args.lr,
                    args.width,
                    seed=args.seed,
                    heldout=args.heldout,
                    negatives=args.negatives,
                )
            )
        )
    elif args.command == "evaluate":
        print(summary(evaluate(load_segmenter(args.weights), args.n, args.seed)))
    else:
        from pbw.assets import mini_generator_path
        from pbw.checkpoints import load_generator

        g = load_generator(args.generator or mini_generator_path("stylegan2")).eval()
        print(json.dumps(bird_rate_of(g, args.n, args.seed, load_segmenter(args.weights)), indent=1))


if __name__ == "__main__":
    main()
