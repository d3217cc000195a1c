"""Writers of tiny datasets in the real on-disk layouts (CUB-200-2011, Places365, image folders,
Hugging Face ``datasets``), for tests. Importable by any test: ``from fixtures_data import
write_tiny_cub``.

Every image is filled with its class colour (``class_color(c)``), so a test can tell the label of
an image from its pixels; CUB images also carry a white rectangle at their bounding box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Odd, non-square sizes (W, H), cycled over the images.
SIZES = [(37, 29), (24, 41), (33, 33), (50, 21)]


def class_color(c: int) -> tuple[int, int, int]:
    """The fill colour of class ``c`` in every fixture (distinct for c < 8, never white)."""
    palette = [
        (200, 30, 30),
        (30, 200, 30),
        (30, 30, 200),
        (200, 200, 30),
        (200, 30, 200),
        (30, 200, 200),
        (120, 60, 0),
        (0, 60, 120),
    ]
    return palette[c % len(palette)]


def _image(c: int, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> Image.Image:
    arr = np.empty((size[1], size[0], 3), np.uint8)
    arr[:] = class_color(c)
    if box is not None:
        x, y, w, h = box
        arr[y : y + h, x : x + w] = 255
    return Image.fromarray(arr)


def _save(img: Image.Image, path: Path, mode: str = "RGB") -> None:
    """Save as JPEG in ``mode``: "RGB", "L" (grayscale), "CMYK", or "corrupt" (not an image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "corrupt":
        path.write_bytes(b"this is not a JPEG file")
    elif mode == "truncated":
        img.save(path, quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        img.convert(mode).save(path, format="JPEG", quality=95)


def _modes(n: int, grayscale: int, cmyk: int, corrupt: int) -> list[str]:
    """Image modes for n images: the first ``grayscale`` are L, then ``cmyk`` CMYK, then
    ``corrupt`` unreadable, the rest RGB."""
    modes = ["L"] * grayscale + ["CMYK"] * cmyk + ["corrupt"] * corrupt
    assert len(modes) <= n, "more special images than images"
    return modes + ["RGB"] * (n - len(modes))


def _sizes(size: int | tuple[int, int] | None) -> list[tuple[int, int]]:
    """Image sizes (W, H) to cycle over: ``SIZES`` by default, else all ``size`` (int: square)."""
    if size is None:
        return SIZES
    return [(size, size) if isinstance(size, int) else tuple(size)]


def write_tiny_cub(
    root: str | Path,
    n_classes: int = 2,
    per_class: int = 3,
    captions: bool = True,
    grayscale: int = 1,
    cmyk: int = 1,
    corrupt: int = 0,
    size: int | tuple[int, int] | None = None,
) -> Path:
    """Write a tiny CUB-200-2011 as extracted from its archive, under ``root``.

    Layout: ``root/CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt,
    train_test_split.txt, bounding_boxes.txt, images/<class>/<file>.jpg}`` and, with
    ``captions``, Reed et al.'s ``root/text_c10/<class>/<file>.txt`` (ten lines each).
    Images have odd sizes (``SIZES``; ``size`` makes them all one size); the first ``grayscale``
    images are grayscale, the next ``cmyk`` CMYK, the next ``corrupt`` unreadable. Every other image of a class is in the test split.
    Caption line j of image i is ``"bird {i} caption {j}"`` (i is CUB's 1-based image id).
    Returns the ``CUB_200_2011`` folder.
    """
    root = Path(root)
    cub = root / "CUB_200_2011"
    (cub / "images").mkdir(parents=True, exist_ok=True)
    n = n_classes * per_class
    modes = _modes(n, grayscale, cmyk, corrupt)
    sizes = _sizes(size)
    classes, images, labels, split, boxes = [], [], [], [], []
    for c in range(n_classes):
        cls = f"{c + 1:03d}.Tiny_Bird_{c}"
        classes.append(f"{c + 1} {cls}")
        for k in range(per_class):
            i = c * per_class + k + 1  # CUB image ids are 1-based
            rel = f"{cls}/Tiny_Bird_{c}_{k:04d}_{i}.jpg"
            w, h = sizes[(i - 1) % len(sizes)]
            box = (w // 4, h // 4, w // 2, h // 2)
            _save(_image(c, (w, h), box), cub / "images" / rel, modes[i - 1])
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c + 1}")
            split.append(f"{i} {int(k % 2 == 0)}")
            boxes.append(f"{i} {box[0]:.1f} {box[1]:.1f} {box[2]:.1f} {box[3]:.1f}")
            if captions:
                txt = root / "text_c10" / rel.replace(".jpg", ".txt")
                txt.parent.mkdir(parents=True, exist_ok=True)
                txt.write_text("".join(f"bird {i} caption {j}\n" for j in range(10)))
    for name, lines in [
        ("classes.txt", classes),
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
    ]:
        (cub / name).write_text("\n".join(lines) + "\n")
    return cub


PLACES_CATEGORIES = ("/a/airfield", "/b/bedroom", "/c/church/outdoor", "/k/kitchen")


def write_tiny_places(
    root: str | Path,
    categories: tuple[str, ...] = PLACES_CATEGORIES,
    per_class: int = 3,
    val_per_class: int = 2,
    large: bool = False,
    grayscale: int = 1,
    cmyk: int = 0,
    corrupt: int = 0,
    size: int | tuple[int, int] | None = None,
) -> Path:
    """Write a tiny Places365-standard as downloaded, under ``root``, and return ``root``.

    Layout: ``categories_places365.txt`` ("/a/airfield 0"), ``places365_train_standard.txt``
    ("/a/airfield/00000001.jpg 0"), ``places365_val.txt`` ("Places365_val_00000001.jpg 0"), and the
    image folders ``data_256/`` + ``val_256/`` (the small images) or, with ``large``,
    ``data_large/`` + ``val_large/``. Special images (grayscale/CMYK/corrupt) are the first
    training images. Sizes as in ``write_tiny_cub``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train_dir, val_dir = ("data_large", "val_large") if large else ("data_256", "val_256")
    modes = _modes(len(categories) * per_class, grayscale, cmyk, corrupt)
    sizes = _sizes(size)
    train, val = [], []
    v = 0
    for c, cat in enumerate(categories):
        for k in range(per_class):
            rel = f"{cat}/{k + 1:08d}.jpg"
            i = c * per_class + k
            _save(_image(c, sizes[i % len(sizes)]), root / train_dir / rel.lstrip("/"), modes[i])
            train.append(f"{rel} {c}")
        for _ in range(val_per_class):
            v += 1
            name = f"Places365_val_{v:08d}.jpg"
            _save(_image(c, sizes[v % len(sizes)]), root / val_dir / name)
            val.append(f"{name} {c}")
    (root / "categories_places365.txt").write_text("".join(f"{cat} {c}\n" for c, cat in enumerate(categories)))
    (root / "places365_train_standard.txt").write_text("\n".join(train) + "\n")
    (root / "places365_val.txt").write_text("\n".join(val) + "\n")
    return root


def write_tiny_image_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog", "owl"),
    per_class: int = 3,
    grayscale: int = 1,
    corrupt: int = 0,
) -> Path:
    """Write a class-per-folder tree ``root/<class>/<k>.jpg`` (class c filled with
    ``class_color(c)``, classes in sorted order) and return ``root``."""
    root = Path(root)
    modes = _modes(len(classes) * per_class, grayscale, 0, corrupt)
    for c, cls in enumerate(sorted(classes)):
        for k in range(per_class):
            i = c * per_class + k
            _save(_image(c, SIZES[i % len(SIZES)]), root / cls / f"{k:04d}.jpg", modes[i])
    return root


def write_tiny_hf_dataset(
    path: str | Path,
    n_classes: int = 3,
    per_class: int = 3,
    captions: bool = True,
    class_names: tuple[str, ...] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
) -> Path:
    """Save a tiny Hugging Face ``DatasetDict`` with ``save_to_disk`` at ``path`` and return it.

    Columns: ``image`` (Image feature), ``label`` (ClassLabel named ``class_names`` or
    "class_<c>"), and with ``captions`` a ``text`` column holding a list of captions per image
    ("img {i} caption {j}", three each). Every split holds the same rows.
    """
    import datasets

    names = list(class_names or [f"class_{c}" for c in range(n_classes)])
    rows = {"image": [], "label": []}
    if captions:
        rows["text"] = []
    for c in range(len(names)):
        for k in range(per_class):
            i = c * per_class + k
            rows["image"].append(_image(c, SIZES[i % len(SIZES)]).convert("L" if k == 0 else "RGB"))
            rows["label"].append(c)
            if captions:
                rows["text"].append([f"img {i} caption {j}" for j in range(3)])
    feats = {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    if captions:
        feats["text"] = datasets.Sequence(datasets.Value("string"))
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features(feats))
    datasets.DatasetDict(dict.fromkeys(splits, ds)).save_to_disk(str(path))
    return Path(path)
