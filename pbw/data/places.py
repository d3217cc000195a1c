"""Places365 scenes (Zhou et al. 2017), standard training set, with optional class subsets."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from pbw.data.common import BadImagePolicy, FileSource, ImageDataModule, ImageDataset

PLACES_URL = "http://places2.csail.mit.edu/download.html"
# Image folders as the archives extract (and as torchvision names them), by image size.
TRAIN_DIRS = {
    "small": ("data_256", "data_256_standard", "train_256", "train_256_places365standard"),
    "large": ("data_large", "data_large_standard", "train_large", "train_large_places365standard"),
}
VAL_DIRS = {"small": ("val_256",), "large": ("val_large",)}


def category_name(raw: str) -> str:
    """A Places category without its letter folder: "/c/church/outdoor" -> "church/outdoor"."""
    return re.sub(r"^/?[a-z]/(?=.)", "", raw.strip()).lstrip("/")


def resolve_classes(classes: Sequence[str | int], names: Sequence[str]) -> list[int]:
    """Indices into ``names`` of ``classes`` (names with or without "/x/", or indices), in order."""
    normalized = [category_name(n) for n in names]
    lookup = {n: i for i, n in enumerate(normalized)}
    out = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= c < len(names):
                raise ValueError(f"class index {c} is outside 0..{len(names) - 1}")
            out.append(int(c))
            continue
        key = category_name(str(c))
        if key not in lookup:
            close = difflib.get_close_matches(key, normalized, n=5)
            raise ValueError(
                f"unknown class {c!r}"
                + (f"; did you mean {close}?" if close else "")
                + f" ({len(names)} classes, e.g. {normalized[:3]})"
            )
        out.append(lookup[key])
    if len(set(out)) != len(out):
        raise ValueError(f"classes {list(classes)} name a class more than once")
    if not out:
        raise ValueError("classes is empty: give None for all classes, or a list of class names/indices")
    return out


def read_file_list(path: Path, n_classes: int, what: str) -> tuple[list[str], np.ndarray]:
    """Read a Places file list of "<image path> <label>" lines; labels must be in 0..n_classes-1."""
    paths, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path} line {n}: expected '<image path> <label>', got {line!r}")
        label = int(parts[1])
        if not 0 <= label < n_classes:
            raise ValueError(
                f"{path} line {n}: label {label} is outside 0..{n_classes - 1} ({n_classes} classes in {what})"
            )
        paths.append(parts[0].lstrip("/"))
        labels.append(label)
    if not paths:
        raise ValueError(f"{path} lists no images")
    return paths, np.asarray(labels, np.int64)


class Places365DataModule(ImageDataModule):
    """Places365-standard as a LightningDataModule (labels 0..364, or 0..k-1 for a subset).

    Sources (give exactly one):
      - ``root``: the folder with the downloaded files: ``categories_places365.txt``,
        ``places365_train_standard.txt``, ``places365_val.txt`` (from filelist_places365-standard.tar)
        and the extracted image folders: the small 256 px images (``data_256/`` + ``val_256/``) or
        the high-resolution ones (``data_large/`` + ``val_large/``). ``image_size`` "auto" uses the
        small images for resolution <= 256 and the large ones above, falling back to whichever is
        there; ``train_dir``/``val_dir`` name the folders explicitly (relative to ``root`` or
        absolute). ``val_list`` None: validate on a ``val_fraction`` of the training images.
      - ``hf_dataset``: a Hugging Face dataset id or local folder (columns ``image_column``,
        ``label_column``; splits ``hf_train_split``/``hf_val_split``).
      - ``image_folder``: a local class-per-folder tree (one top-level folder per class).

    ``classes`` picks a subset (e.g. ``["bedroom", "church/outdoor"]``, names with or without the
    leading "/x/", or indices), relabelled 0..k-1 in the given order; ``class_names`` and
    ``num_classes`` describe the labels the batches carry.
    """

    def __init__(
        self,
        root: str | None = None,
        classes: list[str | int] | None = None,
        image_size: Literal["auto", "small", "large"] = "auto",
        train_dir: str | None = None,
        val_dir: str | None = None,
        categories_file: str = "categories_places365.txt",
        train_list: str = "places365_train_standard.txt",
        val_list: str | None = "places365_val.txt",
        image_folder: str | None = None,
        hf_dataset: str | None = None,
        hf_train_split: str = "train",
        hf_val_split: str | None = "validation",
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
        super().__init__(
            image_folder=image_folder,
            hf_dataset=hf_dataset,
            hf_train_split=hf_train_split,
            hf_val_split=hf_val_split,
            image_column=image_column,
            label_column=label_column,
            caption_column=caption_column,
            batch_size=batch_size,
            num_workers=num_workers,
            resolution=resolution,
            xflip=xflip,
            seed=seed,
            val_fraction=val_fraction,
            on_bad_image=on_bad_image,
        )
        if sum(x is not None for x in (root, image_folder, hf_dataset)) != 1:
            raise ValueError(
                "Places365DataModule: give exactly one of root (the downloaded Places365 "
                "folder), hf_dataset and image_folder"
            )
        if image_size not in ("auto", "small", "large"):
            raise ValueError(f"image_size must be 'auto', 'small' or 'large', got {image_size!r}")
        self.root = Path(root).expanduser() if root is not None else None
        self.classes = list(classes) if classes is not None else None
        self.image_size, self.train_dir, self.val_dir = image_size, train_dir, val_dir
        self.categories_file, self.train_list, self.val_list = categories_file, train_list, val_list
        self._subset: list[int] | None = None

    # --- classes -------------------------------------------------------------------------------
    def _all_class_names(self) -> list[str]:
        full = [category_name(n) for n in super()._all_class_names()]
        self._n_all_classes = len(full)
        self._subset = resolve_classes(self.classes, full) if self.classes is not None else None
        return full if self._subset is None else [full[i] for i in self._subset]

    def _native_class_names(self) -> list[str]:
        path = self._meta_file(self.categories_file, "the category list")
        names: dict[int, str] = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path} line {n}: expected '<category> <index>' like '/a/airfield 0', got {line!r}")
            names[int(parts[1])] = parts[0]
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{path}: category indices must be 0..{len(names) - 1}, each once")
        return [names[i] for i in range(len(names))]

    def _finalize(self, train: ImageDataset, val: ImageDataset | None) -> tuple[ImageDataset, ImageDataset | None]:
        n_names = len(self.class_names)  # also resolves the subset
        if self._subset is None:
            return train, val
        mapping = np.full(self._n_all_classes, -1, np.int64)  # original label -> new label or -1
        mapping[self._subset] = np.arange(n_names)

        def keep(ds: ImageDataset, what: str) -> ImageDataset:
            new = mapping[ds.labels]
            idx = np.flatnonzero(new >= 0)
            if len(idx) == 0:
                raise ValueError(f"the {what} has no images of the classes {self.classes}")
            return ds.subset(idx, new[idx])

        return keep(train, "training set"), (keep(val, "validation set") if val is not None else None)

    # --- files ---------------------------------------------------------------------------------
    def _meta_file(self, name: str, what: str) -> Path:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{name} ({what}) not found in {self.root}: download filelist_places365-standard.tar from "
                f"{PLACES_URL} and extract it in {self.root}, or set the file's path"
            )
        return path

    def _image_dir(self, explicit: str | None, candidates: dict[str, tuple[str, ...]], what: str) -> Path:
        if explicit is not None:
            path = self.root / explicit  # an absolute explicit path replaces root
            if not path.is_dir():
                raise FileNotFoundError(f"{what} folder {path} not found")
            return path
        sizes = {
            "small": ["small"],
            "large": ["large"],
            "auto": ["small", "large"] if self.resolution <= 256 else ["large", "small"],
        }[self.image_size]
        looked = [name for size in sizes for name in candidates[size]]
        for name in looked:
            if (self.root / name).is_dir():
                return self.root / name
        raise FileNotFoundError(
            f"no {what} folder in {self.root} (looked for {', '.join(looked)}): download the "
            f"{'/'.join(sizes)} images from {PLACES_URL} and extract them there, or set "
            f"{'train_dir' if what.startswith('training') else 'val_dir'}"
        )

    def _read_split(self, list_name: str, image_dir: Path, what: str) -> ImageDataset:
        n_classes = len(self._native_class_names())
        paths, labels = read_file_list(
            self._meta_file(list_name, f"the {what} file list"), n_classes, self.categories_file
        )
        if not (image_dir / paths[0]).is_file():
            raise FileNotFoundError(
                f"{image_dir / paths[0]} (first image of {list_name}) not found: "
                f"{image_dir} does not hold the images of {list_name}"
            )
        return ImageDataset(FileSource(image_dir, paths), labels, self.resolution, True, self.xflip)

    def _native_datasets(self) -> tuple[ImageDataset, ImageDataset | None]:
        train = self._read_split(
            self.train_list, self._image_dir(self.train_dir, TRAIN_DIRS, "training image"), "training"
        )
        if self.val_list is None:
            return train, None
        return train, self._read_split(
            self.val_list, self._image_dir(self.val_dir, VAL_DIRS, "validation image"), "validation"
        )
