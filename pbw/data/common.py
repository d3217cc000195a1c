"""Shared image-dataset machinery: image loading, the dataset class, the generic readers (a
class-per-folder tree, a Hugging Face ``datasets`` dataset) and the LightningDataModule base.

Batch format (the trainers rely on it): a dict with ``"image"``: float32 [B, 3, R, R] in [-1, 1],
``"label"``: int64 [B], and ``"caption"``: list[str] when the dataset has captions (one caption
per image: a random one in training, the first one in validation).
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

BadImagePolicy = Literal["error", "skip"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def to01(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1] on the CPU (for saving and display)."""
    return ((x.detach().float().clamp(-1, 1) + 1) / 2).cpu()


class BadImageError(RuntimeError):
    """An image file that cannot be read."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, CMYK, P, RGBA, LA, I;16...) to RGB; transparency goes on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def bbox_crop_box(bbox: Sequence[float], image_size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """A square crop box (left, top, right, bottom) around a bounding box ``(x, y, w, h)``.

    Its side is the box's longer side times ``1 + 2 * margin``, centred on the box and clipped to
    the image (so it may be non-square at the image border).
    """
    x, y, w, h = (float(v) for v in bbox)
    half = max(w, h) * (0.5 + margin)
    cx, cy = x + w / 2, y + h / 2
    width, height = image_size
    left, top = max(0, int(round(cx - half))), max(0, int(round(cy - half)))
    right, bottom = min(width, int(round(cx + half))), min(height, int(round(cy + half)))
    if right <= left or bottom <= top:
        return 0, 0, width, height
    return left, top, right, bottom


def load_image(
    source: str | os.PathLike | bytes | Image.Image,
    name: str,
    resolution: int,
    bbox: Sequence[float] | None = None,
    bbox_margin: float = 0.25,
) -> Image.Image:
    """Read an image as a ``resolution`` x ``resolution`` RGB PIL image.

    ``source`` is a path, encoded bytes or a PIL image; ``name`` names it in errors. Optionally
    crop around ``bbox`` (x, y, w, h) first (see ``bbox_crop_box``). Then the shorter side is
    resized to ``resolution`` (bicubic, antialiased) and the centre is cropped. Raises
    ``BadImageError`` naming ``name`` when the image cannot be decoded.
    """
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            if bbox is None:
                img.draft("RGB", (resolution, resolution))  # fast JPEG decode at reduced scale
            img.load()
        img = to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(
            f"cannot read image {name}: {e}. Replace or delete the file, or set "
            f"on_bad_image='skip' to leave unreadable images out."
        ) from e
    if bbox is not None:
        img = img.crop(bbox_crop_box(bbox, img.size, bbox_margin))
    img = TF.resize(img, [resolution], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(img, [resolution, resolution])


def pil_to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a contiguous float32 CHW tensor in [-1, 1]. (numpy, not torch ops: in
    the main process torch's thread pool costs ~10x more than the arithmetic on busy CPUs.)"""
    arr = np.asarray(img, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class FileSource:
    """Images stored as files: ``base / relpath``. Paths are kept as a bytes array (compact, and
    cheap to share with DataLoader workers)."""

    def __init__(self, base: str | Path, relpaths: Sequence[str] | np.ndarray):
        self.base = str(base)
        self.relpaths = np.asarray(
            [os.fsencode(p) for p in relpaths] if not isinstance(relpaths, np.ndarray) else relpaths, dtype=np.bytes_
        )

    def __len__(self) -> int:
        return len(self.relpaths)

    def read(self, i: int) -> tuple[str, str]:
        path = os.path.join(self.base, os.fsdecode(self.relpaths[i]))
        return path, path

    def key(self, i: int) -> tuple[str, bytes]:
        """What identifies image ``i`` across subsets of the same files."""
        return self.base, bytes(self.relpaths[i])

    def select(self, indices: np.ndarray) -> FileSource:
        return FileSource(self.base, self.relpaths[indices])


class HFSource:
    """Images in a column of a Hugging Face ``datasets.Dataset``, read undecoded and decoded by
    ``load_image`` so that errors name the row (``rows``: the dataset rows this source covers)."""

    def __init__(self, dataset: Any, column: str, description: str, rows: np.ndarray | None = None):
        import datasets

        if column not in dataset.column_names:
            raise ValueError(
                f"image column {column!r} not in {description} (columns: {dataset.column_names}); set image_column"
            )
        feature = dataset.features[column]
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        self.dataset, self.column, self.description = dataset, column, description
        self.rows = np.arange(len(dataset)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def key(self, i: int) -> tuple[int, int]:
        """What identifies image ``i`` across subsets of the same dataset."""
        return id(self.dataset), int(self.rows[i])

    def read(self, i: int) -> tuple[str | bytes | Image.Image, str]:
        row = int(self.rows[i])
        value = self.dataset[row][self.column]
        name = f"row {row} of {self.description}"
        if isinstance(value, dict) and ("bytes" in value or "path" in value):  # undecoded Image feature
            if value.get("path"):
                name = f"{name} ({value['path']})"
            return (value["bytes"] if value.get("bytes") is not None else value["path"]), name
        if isinstance(value, str):  # a column of file paths
            return value, f"{name} ({value})"
        if isinstance(value, Image.Image):
            return value, name
        raise TypeError(
            f"{name}: column {self.column!r} holds {type(value).__name__}, not an image, "
            f"encoded image bytes or a file path; set image_column"
        )

    def select(self, indices: np.ndarray) -> HFSource:
        return HFSource(self.dataset, self.column, self.description, self.rows[indices])


class ImageDataset(Dataset):
    """Labelled images (optionally with captions and bounding boxes) as samples of the batch
    format: ``{"image": [3, R, R] in [-1, 1], "label": int, "caption": str}``.

    ``train`` picks a random caption and, with ``xflip``, flips half of the images horizontally;
    otherwise the first caption is used and nothing is flipped.
    """

    def __init__(
        self,
        source: FileSource | HFSource,
        labels: Sequence[int] | np.ndarray,
        resolution: int,
        train: bool,
        xflip: bool = False,
        captions: Sequence[list[str]] | None = None,
        bboxes: np.ndarray | None = None,
        bbox_margin: float = 0.25,
    ):
        self.source = source
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(source):
            raise ValueError(f"{len(source)} images but {len(self.labels)} labels")
        if captions is not None and len(captions) != len(source):
            raise ValueError(f"{len(source)} images but {len(captions)} caption lists")
        self.captions = list(captions) if captions is not None else None
        self.bboxes = bboxes
        self.resolution, self.train, self.xflip, self.bbox_margin = resolution, train, xflip, bbox_margin

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> Image.Image:
        """Image ``i`` as a resolution x resolution RGB PIL image (no flip)."""
        source, name = self.source.read(i)
        bbox = self.bboxes[i] if self.bboxes is not None else None
        return load_image(source, name, self.resolution, bbox, self.bbox_margin)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.load(i)
        if self.train and self.xflip and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        sample = {"image": pil_to_unit_tensor(image), "label": int(self.labels[i])}
        if self.captions is not None:
            caps = self.captions[i]
            if not caps:
                raise ValueError(f"image {self.source.read(i)[1]} has no caption")
            sample["caption"] = caps[int(torch.randint(len(caps), ()))] if self.train else caps[0]
        return sample

    def subset(self, indices: Sequence[int] | np.ndarray, labels: np.ndarray | None = None) -> ImageDataset:
        """The images at ``indices`` (optionally with new ``labels``), same settings."""
        idx = np.asarray(indices, dtype=np.int64)
        out = copy.copy(self)
        out.source = self.source.select(idx)
        out.labels = self.labels[idx] if labels is None else np.asarray(labels, dtype=np.int64)
        out.captions = [self.captions[i] for i in idx] if self.captions is not None else None
        out.bboxes = self.bboxes[idx] if self.bboxes is not None else None
        return out

    def with_mode(self, train: bool) -> ImageDataset:
        """The same images with training (random caption, flips) or validation behaviour."""
        out = copy.copy(self)
        out.train = train
        return out


def find_bad_images(
    dataset: ImageDataset, indices: Sequence[int], threads: int = 4, desc: str = "checking images"
) -> list[str | None]:
    """Decode the images at ``indices``; for each, None or the reason it cannot be read."""

    def check(i: int) -> str | None:
        try:
            dataset.load(i)
        except BadImageError as e:
            return str(e.__cause__ or e)
        return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(tqdm(pool.map(check, indices), total=len(indices), desc=desc, disable=len(indices) < 1000))


def drop_bad_images(sets: dict[str, ImageDataset], threads: int = 4) -> dict[str, ImageDataset]:
    """The datasets (named by their keys) without their unreadable images, with ONE warning
    listing those. An image shared by several sets is decoded once."""
    errors: dict[Any, str | None] = {}  # source key -> reason or None
    bad: dict[str, list[int]] = {}
    for what, ds in sets.items():
        keys = [ds.source.key(i) for i in range(len(ds))]
        todo = [i for i, k in enumerate(keys) if k not in errors]
        for i, err in zip(todo, find_bad_images(ds, todo, threads, desc=f"checking {what} images"), strict=True):
            errors[keys[i]] = err
        bad[what] = [i for i, k in enumerate(keys) if errors[k] is not None]
    if not any(bad.values()):
        return sets
    listed = {}
    for what, ds in sets.items():
        for i in bad[what]:
            listed.setdefault(ds.source.key(i), f"{ds.source.read(i)[1]} ({errors[ds.source.key(i)]})")
    lines = list(listed.values())
    lines = lines[:100] + ([f"... and {len(lines) - 100} more"] if len(lines) > 100 else [])
    counts = ", ".join(f"{len(bad[w])} of the {len(ds)} in the {w}" for w, ds in sets.items())
    warnings.warn(
        f"on_bad_image='skip': skipped {len(listed)} unreadable image(s) ({counts}):\n  " + "\n  ".join(lines),
        stacklevel=2,
    )
    return {w: ds.subset(np.setdiff1d(np.arange(len(ds)), bad[w])) for w, ds in sets.items()}


def read_image_folder(root: str | Path) -> tuple[FileSource, np.ndarray, list[str]]:
    """Read a class-per-folder tree ``root/<class>/**/<image>``: returns the images, their labels
    (classes numbered in sorted folder-name order) and the class names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} not found: expected a directory with one sub-folder of images per class"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for c, cls in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / cls, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.relpath(os.path.join(dirpath, f), root))
                    labels.append(c)
    if not paths:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in class folders "
            f"under {root}: expected {root}/<class>/<image>"
        )
    return FileSource(root, paths), np.asarray(labels, dtype=np.int64), classes


def load_hf_split(source: str, split: str) -> Any:
    """Load one split of a Hugging Face dataset: a hub id, a folder written by ``save_to_disk``,
    or a local folder of data files (imagefolder, parquet...) that ``load_dataset`` understands."""
    import datasets

    path = Path(source)
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in the dataset saved at {path} (splits: {list(loaded)})")
            return loaded[split]
        return loaded
    try:
        return datasets.load_dataset(str(source), split=split)
    except Exception as e:  # hub, network and format errors all surface here
        raise RuntimeError(
            f"could not load split {split!r} of the Hugging Face dataset {source!r}: {e}. Check the "
            f"id and split name, or pass a local folder (save_to_disk output or data files)"
        ) from e


def wrap_hf_dataset(
    dataset: Any,
    description: str,
    resolution: int,
    train: bool,
    xflip: bool,
    image_column: str,
    label_column: str | None,
    caption_column: str | None,
) -> tuple[ImageDataset, list[str] | None]:
    """Wrap a ``datasets.Dataset`` as an ``ImageDataset``; also return the class names when the
    label column is a ClassLabel. Without ``label_column`` every label is 0."""
    import datasets

    for kind, col in (("label", label_column), ("caption", caption_column)):
        if col is not None and col not in dataset.column_names:
            raise ValueError(
                f"{kind} column {col!r} not in {description} (columns: {dataset.column_names}); set {kind}_column"
            )
    names = None
    if label_column is None:
        labels = np.zeros(len(dataset), np.int64)
    else:
        labels = np.asarray(dataset.select_columns([label_column]).with_format("numpy")[label_column], np.int64)
        feature = dataset.features[label_column]
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
    captions = None
    if caption_column is not None:
        column = dataset.select_columns([caption_column])[caption_column]
        captions = [[c] if isinstance(c, str) else list(c) for c in column]
    images = dataset.select_columns([image_column]) if image_column in dataset.column_names else dataset
    source = HFSource(images, image_column, description)
    return ImageDataset(source, labels, resolution, train, xflip, captions), names


class ImageDataModule(pl.LightningDataModule):
    """LightningDataModule base for labelled image datasets, and itself a reader of a local
    class-per-folder tree (``image_folder``) or a Hugging Face dataset (``hf_dataset``).

    Subclasses add a native format by overriding ``_native_class_names`` and ``_native_datasets``.
    The validation set is the source's own validation split when it has one, else a held-out
    ``val_fraction`` of the training images (drawn with ``seed``), or the training images
    themselves when ``val_fraction`` is 0 (the usual reference for a GAN's FID).
    ``on_bad_image``: "error" raises naming the file when an unreadable image is met; "skip"
    decodes every image once in ``setup`` and leaves unreadable ones out, with one warning
    listing them.
    """

    def __init__(
        self,
        image_folder: str | None = None,
        hf_dataset: str | None = None,
        hf_train_split: str = "train",
        hf_val_split: str | None = None,
        image_column: str = "image",
        label_column: str | None = "label",
        caption_column: str | None = None,
        batch_size: int = 32,
        num_workers: int = 4,
        resolution: int = 256,
        xflip: bool = True,
        seed: int = 0,
        val_fraction: float = 0.05,
        on_bad_image: BadImagePolicy = "error",
    ):
        super().__init__()
        if image_folder is not None and hf_dataset is not None:
            raise ValueError("give only one of image_folder and hf_dataset")
        if resolution < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"resolution and batch_size must be >= 1 and num_workers >= 0, got "
                f"{resolution}, {batch_size}, {num_workers}"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        self.image_folder, self.hf_dataset = image_folder, hf_dataset
        self.hf_train_split, self.hf_val_split = hf_train_split, hf_val_split
        self.image_column, self.label_column, self.caption_column = image_column, label_column, caption_column
        self.batch_size, self.num_workers, self.resolution = batch_size, num_workers, resolution
        self.xflip, self.seed, self.val_fraction, self.on_bad_image = xflip, seed, val_fraction, on_bad_image
        self.train_set: ImageDataset | None = None
        self.val_set: ImageDataset | None = None
        self._class_names: list[str] | None = None

    # --- classes -------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Names of the classes; label ``i`` is ``class_names[i]``. Cheap: reads metadata only."""
        if self._class_names is None:
            self._class_names = self._all_class_names()
        return self._class_names

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are 0..num_classes-1)."""
        return len(self.class_names)

    def _all_class_names(self) -> list[str]:
        if self.image_folder is not None:
            return read_image_folder(self.image_folder)[2]
        if self.hf_dataset is not None:
            return self._load_hf(self.hf_train_split, train=True)[1]
        return self._native_class_names()

    def _native_class_names(self) -> list[str]:
        raise ValueError(f"{type(self).__name__}: give image_folder or hf_dataset")

    def _native_datasets(self) -> tuple[ImageDataset, ImageDataset | None]:
        raise ValueError(f"{type(self).__name__}: give image_folder or hf_dataset")

    # --- building ------------------------------------------------------------------------------
    def _load_hf(self, split: str, train: bool, names: list[str] | None = None) -> tuple[ImageDataset, list[str]]:
        """One split of ``hf_dataset`` and its class names (from a ClassLabel column, else
        ``names``, else "0".."max label"); labels outside the names are an error."""
        description = f"Hugging Face dataset {self.hf_dataset!r} split {split!r}"
        ds, label_names = wrap_hf_dataset(
            load_hf_split(self.hf_dataset, split),
            description,
            self.resolution,
            train,
            self.xflip,
            self.image_column,
            self.label_column,
            self.caption_column,
        )
        names = label_names or names or [str(c) for c in range(int(ds.labels.max(initial=0)) + 1)]
        if len(ds) and (ds.labels.min() < 0 or ds.labels.max() >= len(names)):
            raise ValueError(
                f"{description}: labels must be in 0..{len(names) - 1} (the "
                f"{len(names)} class names), found {ds.labels.min()}..{ds.labels.max()}"
            )
        return ds, names

    def _source_datasets(self) -> tuple[ImageDataset, ImageDataset | None]:
        if self.image_folder is not None:
            source, labels, _ = read_image_folder(self.image_folder)
            return ImageDataset(source, labels, self.resolution, True, self.xflip), None
        if self.hf_dataset is not None:
            train, names = self._load_hf(self.hf_train_split, train=True)
            return train, (self._load_hf(self.hf_val_split, False, names)[0] if self.hf_val_split else None)
        return self._native_datasets()

    def _finalize(self, train: ImageDataset, val: ImageDataset | None) -> tuple[ImageDataset, ImageDataset]:
        """Hook for subclasses (e.g. class subsets) applied to both sets before splitting."""
        return train, val

    def setup(self, stage: str | None = None) -> None:
        """Build the training and validation sets (once)."""
        if self.train_set is not None:
            return
        train, val = self._source_datasets()
        train, val = self._finalize(train, val)
        if val is None:
            if self.val_fraction > 0:
                order = np.random.default_rng(self.seed).permutation(len(train))
                n_val = max(1, int(round(self.val_fraction * len(train))))
                val, train = train.subset(np.sort(order[:n_val])), train.subset(np.sort(order[n_val:]))
            else:
                val = train
        train, val = train.with_mode(True), val.with_mode(False)
        if self.on_bad_image == "skip":
            kept = drop_bad_images({"training set": train, "validation set": val}, max(1, self.num_workers))
            train, val = kept["training set"], kept["validation set"]
        if len(train) < self.batch_size:
            raise ValueError(
                f"the training set has {len(train)} images, fewer than batch_size="
                f"{self.batch_size}: lower batch_size or add images"
            )
        self.train_set, self.val_set = train, val

    # --- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Shuffled batches, each epoch in an order set by (seed, epoch). A resumed run continues its
        epoch where the checkpoint was taken: Lightning restores the loop's progress before asking
        for the loader, so the batches already trained are left out."""
        self.setup("fit")
        trainer = self.trainer
        sampler = EpochShuffle(
            self.train_set,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            seed=self.seed,
            drop_last=True,
        )
        if trainer is not None and trainer.fit_loop.restarting:  # (else Lightning sets the epoch)
            epoch, done = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if done >= len(sampler) // self.batch_size:  # saved after the epoch's last batch: the next one starts
                epoch, done = epoch + 1, 0
            sampler.set_epoch(epoch)
            sampler.skip = done * self.batch_size
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


class EpochShuffle(DistributedSampler):
    """torch's DistributedSampler (this rank's share of a shuffle drawn from seed + epoch; Lightning
    keeps it under DDP and calls `set_epoch`) that starts its next pass `skip` indices in."""

    skip = 0

    def __iter__(self):
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter(indices)
