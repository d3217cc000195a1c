"""Shared data machinery: image loading, ImageDataset, image-folder and Hugging Face readers,
the ImageDataModule base."""

import warnings

import numpy as np
import pytest
import torch
from fixtures_data import class_color, write_tiny_hf_dataset, write_tiny_image_folder
from PIL import Image

from pbw.data.common import (
    BadImageError,
    FileSource,
    ImageDataModule,
    ImageDataset,
    bbox_crop_box,
    load_hf_split,
    load_image,
    pil_to_unit_tensor,
    read_image_folder,
    to_rgb,
)


def expected_unit(color):
    return torch.tensor(color, dtype=torch.float32) / 127.5 - 1


def test_to_rgb_converts_every_mode():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGBA", (4, 4), (255, 0, 0, 255))).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("L", (4, 4), 77)).getpixel((1, 1)) == (77, 77, 77)
    cmyk = to_rgb(Image.new("CMYK", (4, 4), (0, 255, 255, 0)))
    assert cmyk.mode == "RGB" and cmyk.getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    i16 = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert to_rgb(i16).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("P", (4, 4), 3)
    p.putpalette([0, 0, 0] * 3 + [10, 20, 30])
    assert to_rgb(p).getpixel((0, 0)) == (10, 20, 30)


def test_load_image_resizes_shorter_side_and_center_crops(tmp_path):
    # 40x20: red | green (centre 20 columns) | blue -> the centre crop is all green.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = (255, 0, 0)
    arr[:, 10:30] = (0, 255, 0)
    arr[:, 30:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    img = load_image(tmp_path / "wide.png", "wide", 10)
    assert img.size == (10, 10) and img.mode == "RGB"
    out = np.asarray(img).astype(int)
    assert np.abs(out[:, 1:-1] - (0, 255, 0)).max() <= 3  # bicubic may ring at the very border
    # Upscaling a small grayscale image, and a crop box taken before the resize.
    Image.fromarray(arr[:, :, 0]).convert("L").save(tmp_path / "gray.jpg")
    assert load_image(tmp_path / "gray.jpg", "gray", 64).size == (64, 64)
    red = np.asarray(load_image(tmp_path / "wide.png", "w", 8, bbox=(0, 5, 10, 10), bbox_margin=0.0)).astype(int)
    assert np.abs(red[2:-2, 2:-2] - (255, 0, 0)).max() <= 3


def test_bbox_crop_box_square_with_margin_and_clipped():
    assert bbox_crop_box((40, 40, 20, 10), (100, 100), 0.25) == (35, 30, 65, 60)
    assert bbox_crop_box((40, 40, 20, 10), (100, 100), 0.0) == (40, 35, 60, 55)
    assert bbox_crop_box((0, 0, 20, 10), (100, 100), 0.25) == (0, 0, 25, 20)  # clipped at the border


def test_unit_tensor_range():
    t = pil_to_unit_tensor(Image.new("RGB", (3, 2), (0, 255, 0)))
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[0].eq(-1).all() and t[1].eq(1).all()


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_unreadable_image_error_names_path(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "garbage":
        path.write_bytes(b"not an image")
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(BadImageError, match=f"cannot read image .*{kind}.jpg.*on_bad_image='skip'"):
        load_image(path, str(path), 16)


def test_image_dataset_flip_and_captions(tmp_path):
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = 255  # left half white
    Image.fromarray(arr).save(tmp_path / "a.png")
    source = FileSource(tmp_path, ["a.png"])
    caps = [["first", "second", "third"]]
    train = ImageDataset(source, [5], 8, train=True, xflip=True, captions=caps)
    torch.manual_seed(0)
    samples = [train[0] for _ in range(40)]
    lefts = {bool(s["image"][:, :, :4].mean() > 0) for s in samples}
    assert lefts == {True, False}  # both orientations occur
    assert {s["caption"] for s in samples} == set(caps[0])
    assert all(s["label"] == 5 for s in samples)
    val = train.with_mode(False)
    assert all(val[0]["image"][:, :, :4].mean() > 0.9 for _ in range(10))
    assert val[0]["caption"] == "first"
    noflip = ImageDataset(source, [0], 8, train=True, xflip=False)
    assert all(noflip[0]["image"][:, :, :4].mean() > 0.9 for _ in range(10))
    assert "caption" not in noflip[0]


def test_read_image_folder(tmp_path):
    root = write_tiny_image_folder(tmp_path / "f", classes=("owl", "cat"), per_class=2)
    source, labels, classes = read_image_folder(root)
    assert classes == ["cat", "owl"]
    assert labels.tolist() == [0, 0, 1, 1]
    assert source.read(2)[0].endswith("owl/0000.jpg")
    with pytest.raises(FileNotFoundError, match="one sub-folder of images per class"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        read_image_folder(tmp_path / "empty")


def test_image_folder_datamodule_batches_and_split(tmp_path):
    root = write_tiny_image_folder(tmp_path / "f", per_class=4)
    dm = ImageDataModule(image_folder=str(root), batch_size=3, num_workers=0, resolution=8, val_fraction=0.25)
    assert dm.class_names == ["cat", "dog", "owl"] and dm.num_classes == 3
    dm.setup()
    assert len(dm.train_set) == 9 and len(dm.val_set) == 3
    train_paths = {dm.train_set.source.read(i)[0] for i in range(9)}
    val_paths = {dm.val_set.source.read(i)[0] for i in range(3)}
    assert not train_paths & val_paths
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for batch in batches:
        assert set(batch) == {"image", "label"}
        assert batch["image"].shape == (3, 3, 8, 8) and batch["image"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64
        assert batch["image"].min() >= -1 and batch["image"].max() <= 1
        for img, label in zip(batch["image"], batch["label"], strict=True):  # the pixels match the label
            assert torch.allclose(
                img.mean((1, 2)), expected_unit(class_color(int(label))), atol=0.05
            ) or torch.allclose(img[0], img[1])  # (grayscale images carry no hue)
    # Same seed, same split; no val_fraction: validate on the training images.
    dm2 = ImageDataModule(image_folder=str(root), batch_size=3, num_workers=0, resolution=8, val_fraction=0.25)
    dm2.setup()
    assert dm2.val_set.labels.tolist() == dm.val_set.labels.tolist()
    dm3 = ImageDataModule(image_folder=str(root), batch_size=3, num_workers=0, resolution=8, val_fraction=0)
    dm3.setup()
    assert len(dm3.val_set) == len(dm3.train_set) == 12 and not dm3.val_set.train


def test_workers_deliver_the_same_batches(tmp_path):
    root = write_tiny_image_folder(tmp_path / "f", per_class=2, grayscale=0)
    kwargs = dict(image_folder=str(root), batch_size=2, resolution=8, val_fraction=0)
    images = []
    for workers in (0, 2):
        dm = ImageDataModule(num_workers=workers, **kwargs)
        images.append(torch.cat([b["image"] for b in dm.val_dataloader()]))
    assert images[0].shape == (6, 3, 8, 8) and torch.equal(images[0], images[1])


def test_bad_images_error_or_skip_with_one_warning(tmp_path):
    root = write_tiny_image_folder(tmp_path / "f", per_class=2, corrupt=1)
    dm = ImageDataModule(image_folder=str(root), batch_size=6, num_workers=0, resolution=8, val_fraction=0)
    with pytest.raises(BadImageError, match="cat/0001.jpg"):
        next(iter(dm.train_dataloader()))
    dm = ImageDataModule(
        image_folder=str(root), batch_size=2, num_workers=0, resolution=8, val_fraction=0, on_bad_image="skip"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    messages = [str(w.message) for w in caught if "on_bad_image" in str(w.message)]
    assert len(messages) == 1  # one warning for both sets; the image shared by both is listed once
    assert (
        "skipped 1 unreadable image(s) (1 of the 6 in the training set, 1 of the 6 in the validation set)"
        in messages[0]
        and messages[0].count("cat/0001.jpg") == 2
    )  # its path, and PIL's error naming it
    assert len(dm.train_set) == 5
    assert sum(b["image"].shape[0] for b in dm.train_dataloader()) == 4  # drop_last with batch 2


def test_datamodule_argument_errors(tmp_path):
    root = write_tiny_image_folder(tmp_path / "f", per_class=1)
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        ImageDataModule(image_folder=str(root), batch_size=8, val_fraction=0).setup()
    with pytest.raises(ValueError, match="only one of"):
        ImageDataModule(image_folder=str(root), hf_dataset="x")
    with pytest.raises(ValueError, match="on_bad_image"):
        ImageDataModule(image_folder=str(root), on_bad_image="ignore")
    with pytest.raises(ValueError, match="give image_folder or hf_dataset"):
        ImageDataModule().setup()


def test_hf_dataset_saved_to_disk(tmp_path):
    path = write_tiny_hf_dataset(tmp_path / "hf", n_classes=3, per_class=2, class_names=("a", "b", "c"))
    dm = ImageDataModule(
        hf_dataset=str(path), hf_val_split="test", caption_column="text", batch_size=6, num_workers=0, resolution=8
    )
    assert dm.class_names == ["a", "b", "c"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (6, 3, 8, 8) and batch["label"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["caption"] == [f"img {i} caption 0" for i in range(6)]
    for img, label in zip(batch["image"][1::2], batch["label"][1::2], strict=True):  # odd rows are RGB
        assert torch.allclose(img.mean((1, 2)), expected_unit(class_color(int(label))), atol=0.05)
    train = next(iter(dm.train_dataloader()))
    assert all(c.startswith("img ") for c in train["caption"])
    with pytest.raises(ValueError, match="split 'validation' not in .*splits: \\['train', 'test'\\]"):
        ImageDataModule(hf_dataset=str(path), hf_val_split="validation", resolution=8, batch_size=1).setup()
    with pytest.raises(ValueError, match="caption column 'captions' not in"):
        ImageDataModule(hf_dataset=str(path), caption_column="captions", resolution=8, batch_size=1).setup()
    with pytest.raises(ValueError, match="image column 'img' not in"):
        ImageDataModule(hf_dataset=str(path), image_column="img", resolution=8, batch_size=1).setup()


def test_hf_load_dataset_on_local_imagefolder(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    root = write_tiny_image_folder(tmp_path / "f", per_class=2)
    ds = load_hf_split(str(root), "train")  # datasets' imagefolder builder, labels from folder names
    assert len(ds) == 6 and ds.features["label"].names == ["cat", "dog", "owl"]
    dm = ImageDataModule(hf_dataset=str(root), batch_size=2, num_workers=0, resolution=8, val_fraction=0)
    assert dm.class_names == ["cat", "dog", "owl"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="could not load split 'nope'"):
        load_hf_split(str(root), "nope")


def test_hf_bad_rows_are_named(tmp_path):
    import datasets

    good = io_bytes(Image.new("RGB", (9, 7), (0, 255, 0)))
    rows = {
        "image": [{"bytes": good, "path": None}, {"bytes": b"garbage", "path": None}, {"bytes": good, "path": None}],
        "label": [0, 1, 1],
    }
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(tmp_path / "hf"))
    dm = ImageDataModule(hf_dataset=str(tmp_path / "hf"), batch_size=3, num_workers=0, resolution=4, val_fraction=0)
    with pytest.raises(BadImageError, match="row 1 of Hugging Face dataset"):
        next(iter(dm.val_dataloader()))
    dm = ImageDataModule(
        hf_dataset=str(tmp_path / "hf"),
        batch_size=1,
        num_workers=0,
        resolution=4,
        val_fraction=0.34,
        on_bad_image="skip",
        seed=1,
    )
    with pytest.warns(UserWarning, match="row 1 of Hugging Face dataset"):
        dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 2
    assert torch.cat([b["image"] for b in dm.train_dataloader()])[:, 1].eq(1).all()  # green images left


def io_bytes(img):
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_hf_plain_int_labels_checked_against_training_classes(tmp_path):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    split = lambda labels: datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (5, 5))] * len(labels), "label": labels}, features=feats
    )
    datasets.DatasetDict({"train": split([0, 2, 1]), "val": split([0, 3])}).save_to_disk(str(tmp_path / "hf"))
    dm = ImageDataModule(hf_dataset=str(tmp_path / "hf"), batch_size=1, resolution=4, num_workers=0)
    assert dm.class_names == ["0", "1", "2"]  # no ClassLabel: classes 0..max training label
    with pytest.raises(ValueError, match=r"split 'val': labels must be in 0..2 .*found 0..3"):
        ImageDataModule(hf_dataset=str(tmp_path / "hf"), hf_val_split="val", batch_size=1, resolution=4).setup()
