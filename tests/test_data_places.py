"""Places365DataModule on tiny Places365 fixtures in the downloaded layout."""

import warnings

import pytest
import torch
from fixtures_data import (
    PLACES_CATEGORIES,
    class_color,
    write_tiny_hf_dataset,
    write_tiny_image_folder,
    write_tiny_places,
)

from pbw.data.places import Places365DataModule, category_name, resolve_classes


def places(root, **kwargs):
    defaults = dict(batch_size=2, num_workers=0, resolution=16)
    return Places365DataModule(str(root), **{**defaults, **kwargs})


def unit(color):
    return torch.tensor(color, dtype=torch.float32) / 127.5 - 1


def test_reads_downloaded_layout(tmp_path):
    write_tiny_places(tmp_path, per_class=3, val_per_class=2, grayscale=1)
    dm = places(tmp_path, batch_size=4)
    assert dm.class_names == ["airfield", "bedroom", "church/outdoor", "kitchen"] and dm.num_classes == 4
    dm.setup()
    assert len(dm.train_set) == 12 and len(dm.val_set) == 8
    assert dm.train_set.source.base.endswith("data_256") and dm.val_set.source.base.endswith("val_256")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["image"].abs().max() <= 1
    val = list(dm.val_dataloader())
    labels = torch.cat([b["label"] for b in val])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for img, label in zip(torch.cat([b["image"] for b in val]), labels, strict=True):
        assert torch.allclose(img.mean((1, 2)), unit(class_color(int(label))), atol=0.05)


def test_large_images_and_folder_detection(tmp_path):
    write_tiny_places(tmp_path / "large", large=True, per_class=1, val_per_class=1)
    dm = places(tmp_path / "large", batch_size=1)  # auto: small wanted, falls back to large
    dm.setup()
    assert dm.train_set.source.base.endswith("data_large") and dm.val_set.source.base.endswith("val_large")
    with pytest.raises(FileNotFoundError, match=r"no training image folder .*data_256, data_256_standard"):
        places(tmp_path / "large", image_size="small").setup()
    both = write_tiny_places(tmp_path / "both", per_class=1, val_per_class=1)
    write_tiny_places(both, large=True, per_class=1, val_per_class=1)
    for resolution, expected in ((16, "data_256"), (512, "data_large")):
        dm = places(both, batch_size=1, resolution=resolution)
        dm.setup()
        assert dm.train_set.source.base.endswith(expected)
    (both / "data_256").rename(both / "my_images")
    dm = places(both, batch_size=1, train_dir="my_images", val_dir=str(both / "val_256"), image_size="small")
    dm.setup()
    assert dm.train_set.source.base.endswith("my_images") and dm.val_set.source.base.endswith("val_256")
    assert next(iter(dm.train_dataloader()))["image"].shape == (1, 3, 16, 16)


def test_class_subset_relabelled(tmp_path):
    write_tiny_places(tmp_path, per_class=2, val_per_class=1, grayscale=0)
    dm = places(tmp_path, classes=["/c/church/outdoor", "bedroom", 3])
    assert dm.class_names == ["church/outdoor", "bedroom", "kitchen"] and dm.num_classes == 3
    dm.setup()
    assert sorted(dm.train_set.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert sorted(dm.val_set.labels.tolist()) == [0, 1, 2]
    for batch in dm.train_dataloader():
        for img, label in zip(
            batch["image"], batch["label"], strict=True
        ):  # new label k is original class [2, 1, 3][k]
            assert torch.allclose(img.mean((1, 2)), unit(class_color([2, 1, 3][int(label)])), atol=0.05)


def test_class_name_helpers():
    assert category_name("/c/church/outdoor") == "church/outdoor"
    assert category_name("b/bedroom") == "bedroom" and category_name("bedroom") == "bedroom"
    assert resolve_classes(["kitchen", 0], PLACES_CATEGORIES) == [3, 0]
    with pytest.raises(ValueError, match=r"unknown class 'bedrooom'; did you mean \['bedroom'\]"):
        resolve_classes(["bedrooom"], PLACES_CATEGORIES)
    with pytest.raises(ValueError, match="outside 0..3"):
        resolve_classes([4], PLACES_CATEGORIES)
    with pytest.raises(ValueError, match="more than once"):
        resolve_classes(["bedroom", "/b/bedroom"], PLACES_CATEGORIES)


def test_missing_files_name_what_was_expected(tmp_path):
    root = write_tiny_places(tmp_path, per_class=1, val_per_class=1)
    (root / "places365_val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="places365_val.txt .the validation file list. not found in"):
        places(root, batch_size=1).setup()
    dm = places(root, batch_size=1, val_list=None, val_fraction=0.25)  # validate on held-out training images
    dm.setup()
    assert len(dm.train_set) == 3 and len(dm.val_set) == 1
    (root / "places365_train_standard.txt").unlink()
    with pytest.raises(FileNotFoundError, match="places365_train_standard.txt .the training file list. not found"):
        places(root, val_list=None).setup()
    (root / "categories_places365.txt").unlink()
    with pytest.raises(FileNotFoundError, match="categories_places365.txt .the category list. not found in .*filelist"):
        places(root).class_names
    with pytest.raises(ValueError, match="exactly one of root"):
        Places365DataModule()


def test_bad_labels_and_lines(tmp_path):
    root = write_tiny_places(tmp_path, per_class=1, val_per_class=1)
    lines = (root / "places365_val.txt").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 365"
    (root / "places365_val.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"places365_val.txt line 3: label 365 is outside 0..3"):
        places(root, batch_size=1).setup()
    (root / "places365_val.txt").write_text("Places365_val_00000001.jpg\n")
    with pytest.raises(ValueError, match=r"line 1: expected '<image path> <label>'"):
        places(root, batch_size=1).setup()
    (root / "categories_places365.txt").write_text("/a/airfield 0\n/b/bedroom 2\n")
    with pytest.raises(ValueError, match="category indices must be 0..1"):
        places(root).class_names


def test_missing_images_and_corrupt_files(tmp_path):
    root = write_tiny_places(tmp_path, per_class=2, val_per_class=1, corrupt=1, grayscale=0)
    dm = places(root, batch_size=1, on_bad_image="skip", classes=["airfield"])
    with pytest.warns(
        UserWarning,
        match=r"(?s)skipped 1 unreadable image\(s\) \(1 of the 2 in the training set.*airfield/00000001.jpg",
    ):
        dm.setup()
    assert len(dm.train_set) == 1 and len(dm.val_set) == 1
    for f in (root / "val_256").iterdir():
        f.unlink()
    with pytest.raises(
        FileNotFoundError, match=r"val_256/Places365_val_00000001.jpg \(first image of places365_val.txt\)"
    ):
        places(root, batch_size=1).setup()


def test_hf_and_image_folder_sources_with_subsets(tmp_path):
    path = write_tiny_hf_dataset(
        tmp_path / "hf",
        per_class=2,
        captions=False,
        splits=("train", "validation"),
        class_names=("/a/airfield", "/b/bedroom", "/c/church/outdoor"),
    )
    dm = Places365DataModule(
        hf_dataset=str(path), classes=["church/outdoor", "airfield"], batch_size=4, num_workers=0, resolution=8
    )
    assert dm.class_names == ["church/outdoor", "airfield"]
    batch = next(iter(dm.val_dataloader()))  # hf_val_split="validation"
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].tolist() == [1, 1, 0, 0]
    folder = write_tiny_image_folder(tmp_path / "f", classes=("bedroom", "kitchen", "airfield"), per_class=2)
    dm = Places365DataModule(
        image_folder=str(folder), classes=["kitchen"], batch_size=2, num_workers=0, resolution=8, val_fraction=0
    )
    assert dm.class_names == ["kitchen"] and dm.num_classes == 1
    dm.setup()
    assert len(dm.train_set) == 2 and dm.train_set.labels.tolist() == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings for a clean tree
        batch = next(iter(dm.train_dataloader()))
    assert torch.allclose(batch["image"][1].mean((1, 2)), unit(class_color(2)), atol=0.05)  # sorted: kitchen is 2
