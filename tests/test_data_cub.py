"""CUBDataModule on tiny CUB-200-2011 fixtures in the official layout."""

import re
import warnings

import pytest
import torch
from fixtures_data import class_color, write_tiny_cub, write_tiny_hf_dataset, write_tiny_image_folder
from PIL import Image

from pbw.data.common import BadImageError
from pbw.data.cub import CUBDataModule

PER_CLASS = 3


def cub(root, **kwargs):
    defaults = dict(batch_size=2, num_workers=0, resolution=16)
    return CUBDataModule(str(root), **{**defaults, **kwargs})


def all_batches(loader):
    batches = list(loader)
    return {
        k: (torch.cat([b[k] for b in batches]) if k != "caption" else sum((b[k] for b in batches), []))
        for k in batches[0]
    }


def test_reads_official_layout_with_captions(tmp_path):
    folder = write_tiny_cub(tmp_path, n_classes=2, per_class=PER_CLASS)
    for root in (tmp_path, folder):  # the parent or CUB_200_2011 itself
        dm = cub(root, batch_size=3)
        assert dm.class_names == ["Tiny_Bird_0", "Tiny_Bird_1"] and dm.num_classes == 2
    dm.setup()
    assert len(dm.train_set) == 6 and len(dm.val_set) == 2  # split="all", val_split="test"
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "caption"}
    assert batch["image"].shape == (3, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["label"].dtype == torch.int64 and len(batch["caption"]) == 3
    val = all_batches(dm.val_dataloader())
    for label, caption in zip(val["label"].tolist(), val["caption"], strict=True):
        image_id = int(re.match(r"bird (\d+) caption 0$", caption).group(1))  # val: the first caption
        assert label == (image_id - 1) // PER_CLASS  # labels 0-based, matching the image


def test_training_captions_are_random_among_the_ten(tmp_path):
    write_tiny_cub(tmp_path, n_classes=1, per_class=2)
    dm = cub(tmp_path, split="train", val_split=None, val_fraction=0, batch_size=1)
    dm.setup()
    torch.manual_seed(0)
    seen = {dm.train_set[0]["caption"] for _ in range(60)}
    assert len(seen) > 5 and all(re.fullmatch(r"bird 1 caption \d", c) for c in seen)


def test_splits_follow_train_test_split(tmp_path):
    write_tiny_cub(tmp_path, n_classes=2, per_class=3)  # k = 0, 2 are training images
    dm = cub(tmp_path, split="train", val_split="test")
    dm.setup()
    ids = lambda ds: sorted(int(re.search(r"_(\d+)\.jpg$", ds.source.read(i)[0]).group(1)) for i in range(len(ds)))
    assert ids(dm.train_set) == [1, 3, 4, 6] and ids(dm.val_set) == [2, 5]
    assert dm.train_set.labels.tolist() == [0, 0, 1, 1]
    dm = cub(tmp_path, split="test", val_split=None, val_fraction=0.5, batch_size=1)
    dm.setup()
    assert len(dm.train_set) == 1 and len(dm.val_set) == 1


def test_grayscale_cmyk_odd_sizes_and_colours(tmp_path):
    write_tiny_cub(tmp_path, n_classes=2, per_class=4, grayscale=1, cmyk=1, captions=False)
    dm = cub(tmp_path, val_split="all", batch_size=8)
    val = all_batches(dm.val_dataloader())
    assert "caption" not in val  # no caption folder: captions are left out
    assert val["image"].shape == (8, 3, 16, 16)
    gray = val["image"][0]
    assert torch.allclose(gray[0], gray[1], atol=0.02) and torch.allclose(gray[1], gray[2], atol=0.02)
    for img, label in list(zip(val["image"], val["label"], strict=True))[2:]:  # RGB images: background colour
        corner = img[:, 0, 0] if img[:, 0, 0].max() < 0.9 else img[:, -1, -1]
        expected = torch.tensor(class_color(int(label)), dtype=torch.float32) / 127.5 - 1
        assert torch.allclose(corner, expected, atol=0.1)
    cmyk = val["image"][1]  # CMYK converted: class 0 red-ish background, not garbage
    assert cmyk[0].max() > 0.3 and not torch.allclose(cmyk[0], cmyk[1], atol=0.1)


def test_crop_to_bbox(tmp_path):
    write_tiny_cub(tmp_path, n_classes=2, per_class=2, grayscale=0, cmyk=0)
    white = lambda x: (x > 0.5).all(-3).float().mean().item()
    full = all_batches(cub(tmp_path, val_split="all", batch_size=4).val_dataloader())["image"]
    tight = all_batches(
        cub(tmp_path, val_split="all", batch_size=4, crop_to_bbox=True, bbox_margin=0.0).val_dataloader()
    )["image"]
    loose = all_batches(
        cub(tmp_path, val_split="all", batch_size=4, crop_to_bbox=True, bbox_margin=0.25).val_dataloader()
    )["image"]
    # Boxes of images 1-4 (see write_tiny_cub): 18x14, 12x20, 16x16, 25x10 (the last one's square
    # crop is clipped to the image height 21): the box covers min/max of the square crop.
    for f, t, lo, box_share in zip(full, tight, loose, [14 / 18, 12 / 20, 1.0, 10 / 21], strict=True):
        assert white(t) == pytest.approx(box_share, abs=0.1)
        assert white(t) >= white(f)
        assert white(t) >= white(lo)  # the margin brings background back (unless clipped)
    assert white(tight) > white(loose) + 0.1 and white(tight) > white(full) + 0.1


def test_explicit_and_required_captions(tmp_path):
    write_tiny_cub(tmp_path / "data", n_classes=1, per_class=2, captions=True)
    (tmp_path / "data" / "text_c10").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="captions=True but no caption folder found"):
        cub(tmp_path / "data", captions=True).setup()
    dm = cub(tmp_path / "data", captions_root=str(tmp_path / "elsewhere"), val_split="all")
    assert next(iter(dm.val_dataloader()))["caption"] == ["bird 1 caption 0", "bird 2 caption 0"]
    dm = cub(tmp_path / "data", captions_root=str(tmp_path / "elsewhere"), captions=False, val_split="all")
    assert "caption" not in next(iter(dm.val_dataloader()))
    next(iter((tmp_path / "elsewhere").rglob("*.txt"))).unlink()
    with pytest.raises(FileNotFoundError, match=r"caption file .*\.txt not found"):
        cub(tmp_path / "data", captions_root=str(tmp_path / "elsewhere")).setup()


def test_missing_folder_and_files_name_what_was_expected(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"CUB_200_2011/images.txt not found under .*nowhere.*Download CUB_200_2011.tgz"
    ):
        cub(tmp_path / "nowhere").setup()
    folder = write_tiny_cub(tmp_path, n_classes=1, per_class=2)
    (folder / "bounding_boxes.txt").unlink()
    cub(tmp_path).setup()  # boxes are only needed to crop
    with pytest.raises(FileNotFoundError, match=r"CUB_200_2011/bounding_boxes.txt not found in"):
        cub(tmp_path, crop_to_bbox=True).setup()
    (folder / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"CUB_200_2011/classes.txt not found in"):
        cub(tmp_path).setup()


def test_missing_images_and_bad_labels(tmp_path):
    folder = write_tiny_cub(tmp_path, n_classes=2, per_class=2)
    (folder / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n4 7\n")
    with pytest.raises(ValueError, match=r"image id 4 has class 7, outside 1..2"):
        cub(tmp_path).setup()
    (folder / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    with pytest.raises(ValueError, match=r"image_class_labels.txt has no entry for image id\(s\) \[4\]"):
        cub(tmp_path).setup()
    folder2 = write_tiny_cub(tmp_path / "b", n_classes=1, per_class=2)
    for f in (folder2 / "images").rglob("*.jpg"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"images/001.Tiny_Bird_0/.*jpg \(listed in images.txt\) not found"):
        cub(tmp_path / "b").setup()


def test_corrupt_image_error_or_skip(tmp_path):
    write_tiny_cub(tmp_path, n_classes=2, per_class=2, corrupt=1, grayscale=0, cmyk=0)
    dm = cub(tmp_path, val_split="all", batch_size=4)
    with pytest.raises(BadImageError, match=r"Tiny_Bird_0_0000_1.jpg"):
        next(iter(dm.val_dataloader()))
    dm = cub(tmp_path, val_split="test", batch_size=2, on_bad_image="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    skipped = [str(w.message) for w in caught if "on_bad_image" in str(w.message)]
    assert len(skipped) == 1 and "Tiny_Bird_0_0000_1.jpg" in skipped[0]  # a training image (k=0)
    assert (
        "skipped 1 unreadable image(s) (1 of the 4 in the training set, 0 of the 2 in the validation set)" in skipped[0]
    )
    assert len(dm.train_set) == 3 and len(dm.val_set) == 2
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 16, 16)


def test_hf_and_image_folder_sources(tmp_path):
    path = write_tiny_hf_dataset(tmp_path / "hf", n_classes=2, per_class=2, class_names=("albatross", "wren"))
    dm = CUBDataModule(hf_dataset=str(path), caption_column="text", batch_size=4, num_workers=0, resolution=8)
    assert dm.class_names == ["albatross", "wren"]
    batch = next(iter(dm.val_dataloader()))  # hf_val_split="test"
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].tolist() == [0, 0, 1, 1]
    assert batch["caption"][2] == "img 2 caption 0"
    folder = write_tiny_image_folder(tmp_path / "f", classes=("a", "b"), per_class=2)
    dm = CUBDataModule(image_folder=str(folder), batch_size=2, num_workers=0, resolution=8, val_fraction=0)
    assert dm.num_classes == 2
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="exactly one of root"):
        CUBDataModule(str(tmp_path), image_folder=str(folder))
    with pytest.raises(ValueError, match="exactly one of root"):
        CUBDataModule()


def test_fixture_size_option(tmp_path):
    write_tiny_cub(tmp_path, n_classes=1, per_class=2, size=64, captions=False)
    dm = cub(tmp_path, val_split="all", resolution=32)
    assert next(iter(dm.val_dataloader()))["image"].shape == (2, 3, 32, 32)
    assert {Image.open(p).size for p in (tmp_path / "CUB_200_2011" / "images").rglob("*.jpg")} == {(64, 64)}
