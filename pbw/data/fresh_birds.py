"""An unlimited stream of synthetic birds: every training image is a new bird, drawn when it is needed.

The synthetic world (`pbw.data.synthetic`) has no end, so a generator trained on it need not see the
same bird twice, and nothing has to guard it against overfitting a fixed set (ADA). `FreshBirdsDataModule`
draws bird ``k`` of the world ``seed`` (`pbw.data.synthetic.draw_bird`) for the k-th training image,
k counting on across epochs (an "epoch" is just `epoch_size` images, for logging) and across a resume:
the next index is saved in the checkpoint (the data module's ``state_dict``), so ``--ckpt_path last``
goes on with new birds. Validation uses the same `val_size` birds of the world ``val_seed`` every time.

Batches have the format of `pbw.data.common` (``image`` [B,3,R,R] in [-1, 1], ``label`` the species
0..11, ``caption`` when ``captions``), so the GAN and CLIP trainers take it unchanged::

    data:
      class_path: pbw.data.fresh_birds.FreshBirdsDataModule
      init_args: {resolution: 64, batch_size: 16, num_workers: 1}

Drawing costs ~12 ms per 64 px bird on one core (~5 ms at 32 px); with ``num_workers: 1`` a worker
process draws the next batches while the model trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pbw.data.synthetic import (
    CLASS_NAMES,
    COLOR_NAMES,
    PALETTE_RGB,
    PART_LABELS,
    PARTS,
    BirdSpec,
    draw_bird,
    make_captions,
    part_caption,
    render_bird,
    sample_bird,
)

NAMING_SPREAD = 40.0  # RGB units: a palette color's own name nearly always; halfway to a neighbor, either


def name_color(rgb: np.ndarray, rng: np.random.Generator, spread: float = NAMING_SPREAD) -> str:
    """A palette name for an RGB color, drawn as people name a color between names: each name with
    probability proportional to exp(-d^2 / (2 spread^2)), d its palette color's distance (mostly the
    nearest; a contrastive CLIP trained on such names scores a word lower the farther the color)."""
    logits = -((PALETTE_RGB - rgb) ** 2).sum(1) / (2 * spread**2)
    p = np.exp(logits - logits.max())
    return COLOR_NAMES[int(rng.choice(len(p), p=p / p.sum()))]


class FreshBirds(Dataset):
    """Item ``k``: bird ``k`` of the world ``seed``, drawn on the fly (any k >= 0; ``length`` is only
    what ``len`` reports). ``train`` picks a random caption, otherwise the first one.

    ``part_views`` (with captions): the share of items shown as a masked edit shows them to CLIP: only
    some parts' pixels kept on blank (0 in [-1, 1], the editor's ``paste_onto_blank``), the body alone
    in half of them, captioned with those parts' colors alone (`pbw.data.synthetic.part_caption`).

    ``off_palette``: the share of birds whose parts are painted in random RGB colors (uniform in the
    color cube), each named as people name a color between names (`name_color`). The world's birds
    have only the palette's 11 colors; a CLIP trained on them alone ranks the wrong colors for a word
    arbitrarily (for "yellow", purple above pink), and an edit climbing its score gets stuck on them."""

    def __init__(
        self,
        resolution: int = 64,
        seed: int = 0,
        length: int = 4000,
        captions: bool = False,
        train: bool = True,
        mutation_prob: float = 0.15,
        cache: bool = False,
        part_views: float = 0.0,
        off_palette: float = 0.0,
    ):
        for name, share in (("part_views", part_views), ("off_palette", off_palette)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} is a share of the items, in [0, 1]; got {share}")
        self.resolution, self.seed, self.length = resolution, seed, length
        self.captions, self.train, self.mutation_prob = captions, train, mutation_prob
        self.part_views, self.off_palette = part_views, off_palette
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict[str, Any]:
        if self._cache is not None and k in self._cache:
            return self._cache[k]
        image, label_map, spec, rng = self._draw(int(k))
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1,
            "label": spec.species,
        }
        if self.captions:
            caps = make_captions(spec, rng)
            sample["caption"] = caps[int(rng.integers(len(caps)))] if self.train else caps[0]
            if self.part_views and rng.random() < self.part_views:
                parts = (
                    ("body",)
                    if rng.random() < 0.5
                    else tuple(map(str, rng.choice(PARTS, int(rng.integers(1, 3)), False)))
                )
                keep = np.isin(label_map, [PART_LABELS[p] for p in parts])
                if keep.any():
                    sample["image"] = sample["image"] * torch.from_numpy(keep).float()
                    sample["caption"] = part_caption(spec.part_colors, parts, rng)
        if self._cache is not None:
            self._cache[k] = sample
        return sample

    def _draw(self, k: int) -> tuple[np.ndarray, np.ndarray, BirdSpec, np.random.Generator]:
        """Bird k of the world (`draw_bird`), or with a share `off_palette` the same bird in off-palette
        colors (its own random stream decides, so the world's birds stay as they are)."""
        extra = np.random.default_rng((self.seed, k, 1)) if self.off_palette else None
        if extra is None or extra.random() >= self.off_palette:
            return draw_bird(self.seed, k, self.resolution, self.mutation_prob)
        rng = np.random.default_rng((self.seed, k))
        spec = sample_bird(rng, k % len(CLASS_NAMES), self.mutation_prob)
        rgb = {p: extra.uniform(0, 255, 3) for p in PARTS}
        spec = dataclasses.replace(spec, part_colors={p: name_color(c, extra) for p, c in rgb.items()})
        image, label_map = render_bird(spec, self.resolution, rng, rgb=rgb)
        return image, label_map, spec, rng


class EndlessSampler(Sampler[int]):
    """``epoch_size`` indices per epoch, each new: it counts on from ``next_index`` and never repeats."""

    def __init__(self, epoch_size: int, next_index: int = 0):
        self.epoch_size, self.next_index = epoch_size, next_index

    def __len__(self) -> int:
        return self.epoch_size

    def __iter__(self) -> Iterator[int]:
        for _ in range(self.epoch_size):
            self.next_index += 1
            yield self.next_index - 1


class FreshBirdsDataModule(pl.LightningDataModule):
    """Synthetic birds drawn while training (see the module docstring).

    resolution: image side (>= 16). seed / val_seed: the training and validation worlds.
    epoch_size: images per "epoch" (logging only; every one is new). val_size: validation birds (the
    same ones every time; kept in memory). captions: add a caption to every sample (CLIP training).
    mutation_prob: as in `pbw.data.synthetic.sample_bird`. part_views: the share of captioned birds shown
    as parts on blank with part captions, off_palette the share in random RGB colors (`FreshBirds`;
    training and validation alike).
    """

    def __init__(
        self,
        resolution: int = 64,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 1000,
        val_seed: int = 1001,
        epoch_size: int = 4000,
        val_size: int = 256,
        captions: bool = False,
        mutation_prob: float = 0.15,
        part_views: float = 0.0,
        off_palette: float = 0.0,
    ):
        super().__init__()
        if resolution < 16 or batch_size < 1 or num_workers < 0 or epoch_size < batch_size or val_size < 1:
            raise ValueError(
                f"need resolution >= 16, batch_size >= 1, num_workers >= 0, epoch_size >= batch_size "
                f"and val_size >= 1; got {resolution}, {batch_size}, {num_workers}, {epoch_size}, "
                f"{val_size}"
            )
        if seed == val_seed:
            raise ValueError(f"seed and val_seed must differ (validation birds must be held out), both are {seed}")
        self.resolution, self.batch_size, self.num_workers = resolution, batch_size, num_workers
        self.seed, self.val_seed, self.epoch_size, self.val_size = seed, val_seed, epoch_size, val_size
        self.captions, self.mutation_prob = captions, mutation_prob
        self.sampler = EndlessSampler(epoch_size)
        self.train_set = FreshBirds(
            resolution, seed, epoch_size, captions, True, mutation_prob, part_views=part_views, off_palette=off_palette
        )
        self.val_set = FreshBirds(
            resolution,
            val_seed,
            val_size,
            captions,
            False,
            mutation_prob,
            cache=True,
            part_views=part_views,
            off_palette=off_palette,
        )

    @property
    def class_names(self) -> list[str]:
        return [c.split(".", 1)[1] for c in CLASS_NAMES]

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader:
        # drawn in the main process: the cache then lasts across validations
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        """The next training bird's index (a resumed run goes on with new birds)."""
        return {"next_index": self.sampler.next_index}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sampler.next_index = int(state_dict["next_index"])
