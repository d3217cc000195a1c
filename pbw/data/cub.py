"""CUB-200-2011 birds (Wah et al. 2011) with the optional captions of Reed et al. (2016)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np

from pbw.data.common import BadImagePolicy, FileSource, ImageDataModule, ImageDataset

CUBSplit = Literal["train", "test", "all"]
CUB_URL = "https://data.caltech.edu/records/65de6-vph27"
CAPTIONS_URL = "https://github.com/reedscot/cvpr2016 (the CUB text_c10 archive)"
# Where Reed et al.'s captions are looked for, relative to CUB_200_2011/ and to its parent.
CAPTION_DIRS = ("text_c10", "text", "cvpr2016_cub/text_c10", "birds/text_c10", "birds/text")


def find_cub_folder(root: str | Path) -> Path:
    """The ``CUB_200_2011`` folder: ``root`` itself or ``root/CUB_200_2011``."""
    root = Path(root).expanduser()
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    where = "which does not exist" if not root.exists() else "(looked in it and in its CUB_200_2011/)"
    raise FileNotFoundError(
        f"CUB_200_2011/images.txt not found under {root}, {where}. Download CUB_200_2011.tgz from "
        f"{CUB_URL} and extract it there, then point root at CUB_200_2011/ or its parent."
    )


def _read_table(cub: Path, name: str, n_values: int) -> dict[int, list[str]]:
    """Read a CUB metadata file of ``<image id> <value> ...`` lines into {id: [values]}."""
    path = cub / name
    if not path.is_file():
        raise FileNotFoundError(
            f"CUB_200_2011/{name} not found in {cub}: the folder is incomplete; "
            f"re-extract CUB_200_2011.tgz from {CUB_URL}"
        )
    table = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_values)
        if len(parts) != n_values + 1 or not parts[0].isdigit():
            raise ValueError(f"{path} line {n}: expected '<id>' and {n_values} value(s), got {line!r}")
        table[int(parts[0])] = parts[1:]
    return table


def find_captions_folder(cub: Path) -> Path | None:
    """Reed et al.'s caption folder next to the dataset (see ``CAPTION_DIRS``), or None."""
    for base in (cub, cub.parent):
        for rel in CAPTION_DIRS:
            if (base / rel).is_dir():
                return base / rel
    return None


class CUBDataModule(ImageDataModule):
    """CUB-200-2011 as a LightningDataModule (labels 0..199, batch format of ``pbw.data.common``).

    Sources (give exactly one):
      - ``root``: the official ``CUB_200_2011/`` folder as extracted, or its parent. ``split``
        chooses the training images ("train", "test" or "all" per train_test_split.txt),
        ``val_split`` the validation images (None: a ``val_fraction`` of the training images).
        ``crop_to_bbox`` crops a square around each bird's box, ``bbox_margin`` times the box's
        longer side added on every side. Captions (``text_c10/<class>/<image>.txt``, ten lines
        each): ``captions`` True requires them, None uses them when found, False ignores them;
        ``captions_root`` points at the folder, else it is looked for next to the dataset.
      - ``hf_dataset``: a Hugging Face dataset id or local folder (columns ``image_column``,
        ``label_column``, ``caption_column``; splits ``hf_train_split``/``hf_val_split``).
      - ``image_folder``: a local class-per-folder tree.
    """

    def __init__(
        self,
        root: str | None = None,
        split: CUBSplit = "all",
        val_split: CUBSplit | None = "test",
        crop_to_bbox: bool = False,
        bbox_margin: float = 0.25,
        captions: bool | None = None,
        captions_root: str | None = None,
        image_folder: str | None = None,
        hf_dataset: str | None = None,
        hf_train_split: str = "train",
        hf_val_split: str | None = "test",
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
                "CUBDataModule: give exactly one of root (the CUB_200_2011 folder), hf_dataset and image_folder"
            )
        if split not in ("train", "test", "all") or val_split not in ("train", "test", "all", None):
            raise ValueError(
                f"split must be 'train', 'test' or 'all' and val_split one of those or None, "
                f"got {split!r}, {val_split!r}"
            )
        if bbox_margin < 0:
            raise ValueError(f"bbox_margin must be >= 0, got {bbox_margin}")
        self.root, self.split, self.val_split = root, split, val_split
        self.crop_to_bbox, self.bbox_margin = crop_to_bbox, bbox_margin
        self.captions, self.captions_root = captions, captions_root

    @property
    def cub_folder(self) -> Path:
        """The resolved ``CUB_200_2011`` folder."""
        return find_cub_folder(self.root)

    def _native_class_names(self) -> list[str]:
        classes = _read_table(self.cub_folder, "classes.txt", 1)
        if sorted(classes) != list(range(1, len(classes) + 1)):
            raise ValueError(f"{self.cub_folder / 'classes.txt'}: class ids must be 1..{len(classes)}")
        # "001.Black_footed_Albatross" -> "Black_footed_Albatross"
        return [re.sub(r"^\d+\.", "", classes[i][0]) for i in range(1, len(classes) + 1)]

    def _caption_folder(self, cub: Path) -> Path | None:
        if self.captions is False:
            return None
        if self.captions_root is not None:
            folder = Path(self.captions_root).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"captions_root {folder} is not a folder: expected Reed et al.'s "
                    f"text_c10/ with <class>/<image>.txt files ({CAPTIONS_URL})"
                )
            return folder
        folder = find_captions_folder(cub)
        if folder is None and self.captions:
            looked = ", ".join(str(b / r) for b in (cub, cub.parent) for r in CAPTION_DIRS)
            raise FileNotFoundError(
                f"captions=True but no caption folder found (looked for {looked}); "
                f"download Reed et al.'s CUB captions ({CAPTIONS_URL}), extract "
                f"text_c10/ next to CUB_200_2011/ or set captions_root"
            )
        return folder

    def _native_datasets(self) -> tuple[ImageDataset, ImageDataset | None]:
        cub = self.cub_folder
        n_classes = len(self.class_names)
        images = _read_table(cub, "images.txt", 1)
        labels = _read_table(cub, "image_class_labels.txt", 1)
        is_train = _read_table(cub, "train_test_split.txt", 1)
        boxes = _read_table(cub, "bounding_boxes.txt", 4) if self.crop_to_bbox else None
        ids = sorted(images)
        for name, table in (
            ("image_class_labels.txt", labels),
            ("train_test_split.txt", is_train),
            ("bounding_boxes.txt", boxes),
        ):
            missing = [i for i in ids if table is not None and i not in table]
            if missing:
                raise ValueError(f"{cub / name} has no entry for image id(s) {missing[:10]} of images.txt")
        label_arr = np.asarray([int(labels[i][0]) - 1 for i in ids], np.int64)  # files are 1-based
        bad = np.flatnonzero((label_arr < 0) | (label_arr >= n_classes))
        if len(bad):
            raise ValueError(
                f"{cub / 'image_class_labels.txt'}: image id {ids[bad[0]]} has class "
                f"{label_arr[bad[0]] + 1}, outside 1..{n_classes} of classes.txt"
            )
        relpaths = [images[i][0] for i in ids]
        if not (cub / "images" / relpaths[0]).is_file():  # a quick check that images/ is there
            raise FileNotFoundError(
                f"CUB_200_2011/images/{relpaths[0]} (listed in images.txt) not found "
                f"in {cub}: the images/ folder is missing or incomplete; re-extract "
                f"CUB_200_2011.tgz from {CUB_URL}"
            )
        captions = None
        caption_folder = self._caption_folder(cub)
        if caption_folder is not None:
            captions = [self._read_captions(caption_folder, p) for p in relpaths]
        bbox_arr = np.asarray([[float(v) for v in boxes[i]] for i in ids], np.float32) if boxes else None
        full = ImageDataset(
            FileSource(cub / "images", relpaths),
            label_arr,
            self.resolution,
            True,
            self.xflip,
            captions,
            bbox_arr,
            self.bbox_margin,
        )
        split_flag = np.asarray([is_train[i][0] == "1" for i in ids])

        def pick(split: str) -> ImageDataset:
            keep = {"train": split_flag, "test": ~split_flag, "all": np.ones_like(split_flag)}[split]
            return full.subset(np.flatnonzero(keep))

        return pick(self.split), (pick(self.val_split) if self.val_split is not None else None)

    @staticmethod
    def _read_captions(folder: Path, relpath: str) -> list[str]:
        path = folder / Path(relpath).with_suffix(".txt")
        if not path.is_file():
            raise FileNotFoundError(
                f"caption file {path} not found (captions of images/{relpath}); "
                f"set captions=False to train without captions"
            )
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise ValueError(f"caption file {path} is empty")
        return lines


def read_cub_captions(
    root: str | Path, split: CUBSplit = "test", captions_root: str | Path | None = None
) -> list[tuple[str, list[str]]]:
    """Reed et al.'s captions of the CUB-200-2011 images of ``split`` (per train_test_split.txt), in
    image-id order: ``[(images.txt path, [captions]), ...]``. The caption folder is ``captions_root``
    or looked for next to the dataset (``CAPTION_DIRS``). For prompts, e.g. text-to-image experiments."""
    cub = find_cub_folder(root)
    folder = Path(captions_root).expanduser() if captions_root is not None else find_captions_folder(cub)
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(
            f"no caption folder for {cub}: download Reed et al.'s CUB captions ({CAPTIONS_URL}) "
            "and extract text_c10/ next to CUB_200_2011/, or give the folder itself"
        )
    images = _read_table(cub, "images.txt", 1)
    is_train = _read_table(cub, "train_test_split.txt", 1)
    keep = {"train": lambda i: is_train[i][0] == "1", "test": lambda i: is_train[i][0] == "0", "all": lambda i: True}[
        split
    ]
    return [(images[i][0], CUBDataModule._read_captions(folder, images[i][0])) for i in sorted(images) if keep(i)]
