"""Synthetic captioned birds: CUB layout, determinism, captions that tell the truth, the pixel oracle."""

import itertools
import re

import clip_probes as probes
import numpy as np
import pytest
import torch
from PIL import Image

from pbw.data import synthetic as syn
from pbw.evaluation import oracle


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    root = tmp_path_factory.mktemp("birds")
    return syn.generate(root, n=48, resolution=64, seed=3, progress=False)


def _cub(root):
    return root / "CUB_200_2011"


def _read_rows(path):
    return [line.split() for line in path.read_text().splitlines()]


def test_palette_colors_are_well_separated():
    rgb = np.array(list(syn.PALETTE.values()), dtype=float)
    dists = [np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)]
    assert min(dists) >= 90
    for scheme in syn.SPECIES.values():
        assert set(scheme) == set(syn.PARTS)
        assert all(c in syn.PALETTE for colors in scheme.values() for c in colors)


def test_writes_cub_layout(birds):
    images = _read_rows(_cub(birds) / "images.txt")
    assert [int(r[0]) for r in images] == list(range(1, 49))
    classes = _read_rows(_cub(birds) / "classes.txt")
    assert len(classes) == len(syn.SPECIES) == 12
    assert classes[0] == ["1", "001.Red_Cardinal"]
    labels = dict(_read_rows(_cub(birds) / "image_class_labels.txt"))
    split = dict(_read_rows(_cub(birds) / "train_test_split.txt"))
    boxes = {r[0]: [float(x) for x in r[1:]] for r in _read_rows(_cub(birds) / "bounding_boxes.txt")}
    assert set(split.values()) == {"0", "1"}
    for image_id, rel in images:
        cls = rel.split("/")[0]
        assert cls == classes[int(labels[image_id]) - 1][1]
        img = Image.open(_cub(birds) / "images" / rel)
        assert img.size == (64, 64) and img.mode == "RGB"
        captions = (birds / "text_c10" / rel).with_suffix(".txt").read_text().splitlines()
        assert len(captions) == 10 and all(c.strip() for c in captions)
        parts = syn.load_part_map(birds, rel)
        assert parts.shape == (64, 64) and set(np.unique(parts)) <= set(range(len(syn.PARTS) + 1))
        x, y, w, h = boxes[image_id]
        ys, xs = np.nonzero(parts)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
    meta = syn.load_metadata(birds)
    assert len(meta["images"]) == 48 and meta["palette"]["red"] == list(syn.PALETTE["red"])


def test_deterministic_by_seed_and_prefix_stable(tmp_path, birds):
    again = syn.generate(tmp_path / "again", n=12, resolution=64, seed=3, progress=False)
    other = syn.generate(tmp_path / "other", n=12, resolution=64, seed=4, progress=False)
    for rel in (r[1] for r in _read_rows(_cub(again) / "images.txt")):
        assert (_cub(again) / "images" / rel).read_bytes() == (_cub(birds) / "images" / rel).read_bytes()
        assert (again / "text_c10" / rel).with_suffix(".txt").read_text() == (birds / "text_c10" / rel).with_suffix(
            ".txt"
        ).read_text()
        a = np.asarray(Image.open(_cub(again) / "images" / rel), dtype=float)
        b = np.asarray(Image.open(_cub(other) / "images" / rel), dtype=float)
        assert np.abs(a - b).mean() > 5


def test_captions_name_the_true_part_colors(birds):
    meta = syn.load_metadata(birds)
    word_to_part = {w: p for p, words in syn.PART_WORDS.items() for w in words}
    colors = "|".join(syn.PALETTE)
    words = "|".join(word_to_part)
    adjective = re.compile(rf"\b({colors}) ({words})\b")
    possessive = re.compile(rf"\bits ({words}) (?:is|are) ({colors})\b")
    for info in meta["images"].values():
        truth = info["part_colors"]
        captions = (birds / "text_c10" / info["file"]).with_suffix(".txt").read_text().splitlines()
        for caption in captions:
            named = [(word_to_part[w], c) for c, w in adjective.findall(caption)]
            named += [(word_to_part[w], c) for w, c in possessive.findall(caption)]
            assert len({p for p, _ in named}) >= 2, caption
            assert all(truth[p] == c for p, c in named), (caption, truth)
        # the first caption names every part
        assert {word_to_part[w] for _, w in adjective.findall(captions[0])} == set(syn.PARTS)


def test_canonical_caption():
    colors = {"body": "white", "head": "red", "wing": "blue", "tail": "black", "beak": "orange"}
    assert (
        syn.canonical_caption(colors, ("head", "wing", "body"))
        == "this bird has a red head, blue wings and a white belly."
    )
    assert syn.canonical_caption(colors, ("beak",)) == "this bird has an orange beak."


def test_oracle_recovers_the_drawn_part_colors(birds):
    meta = syn.load_metadata(birds)
    for info in meta["images"].values():
        image = Image.open(_cub(birds) / "images" / info["file"])
        found = oracle.part_colors(image, syn.load_part_map(birds, info["file"]))
        assert found == info["part_colors"]


def test_oracle_reads_tensors_and_rejects_bad_masks():
    rng = np.random.default_rng(0)
    for name, rgb in syn.PALETTE.items():
        img = np.clip(rng.normal(rgb, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
        img[:4] = (0, 255, 255)  # a differently colored strip outside the region
        mask = np.zeros((16, 16), bool)
        mask[6:] = True
        assert oracle.region_color(img, mask) == name
        tensor = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1
        assert oracle.region_color(tensor, torch.from_numpy(mask).float()) == name
    assert oracle.nearest_color((201, 29, 31))[0] == "red"
    with pytest.raises(ValueError, match="empty"):
        oracle.region_color(img, np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="does not match"):
        oracle.region_color(img, np.ones((8, 8), bool))


def test_painted_color_names_what_an_edit_added_to_the_region():
    sky = np.zeros((16, 16, 3), np.uint8) + np.array(syn.PALETTE["blue"], np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True  # 64 pixels
    edited = sky.copy()
    edited[6:12, 4:12] = syn.PALETTE["red"]  # 48 of them turn red
    shares = oracle.color_shares(edited, mask)
    assert shares["red"] == 0.75 and shares["blue"] == 0.25 and sum(shares.values()) == pytest.approx(1)
    assert oracle.painted_color(sky, edited, mask) == "red"
    small = sky.copy()
    small[4:8, 4] = syn.PALETTE["red"]  # 4 of 64 pixels: too little to count as painted
    assert oracle.painted_color(sky, small, mask) is None
    body = sky.copy()
    body[6:9, 5:10] = syn.PALETTE["red"]  # 15 of 64 pixels, a bird's body in a box: painted, the median stays blue
    assert oracle.painted_color(sky, body, mask) == "red" and oracle.region_color(body, mask) == "blue"
    assert oracle.painted_color(sky, sky, mask) is None  # nothing changed
    outside = sky.copy()
    outside[:4] = syn.PALETTE["red"]
    assert oracle.painted_color(sky, outside, mask) is None  # change outside the region does not count


def test_masked_edit_oracle_scores_a_body_redrawn_in_the_asked_color():
    """Birds drawn again with only the body's color changed are perfect edits, also when the asked
    color is the one the body had (nothing to paint); the old body, or a wrong color, is a miss."""
    import copy
    import dataclasses

    from pbw.evaluation.judges import color_oracle

    x0, x1, masks, asked, start = [], [], [], [], []
    for i in range(6):
        rng = np.random.default_rng((5, i))
        spec = syn.sample_bird(rng, i % len(syn.CLASS_NAMES), 0.15)
        state = copy.deepcopy(rng.bit_generator.state)
        image, label_map = syn.render_bird(spec, 64, rng)
        for color in ("red", "blue", "black", spec.part_colors["body"]):
            redraw = np.random.default_rng()
            redraw.bit_generator.state = copy.deepcopy(state)  # the same pose and background
            edited, _ = syn.render_bird(
                dataclasses.replace(spec, part_colors={**spec.part_colors, "body": color}), 64, redraw
            )
            x0.append(image)
            x1.append(edited)
            masks.append(label_map == syn.PART_LABELS["body"])
            asked.append(color)
            start.append(spec.part_colors["body"])
    x0, x1 = (torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() / 127.5 - 1 for x in (x0, x1))
    masks = torch.from_numpy(np.stack(masks))[:, None].float()
    assert color_oracle(x0, x1, masks, asked)["oracle_accuracy"] == 1.0
    assert color_oracle(x0, x0, masks, asked)["oracle_accuracy"] == np.mean(
        [a == s for a, s in zip(asked, start, strict=True)]
    )
    wrong = ["green" if a != "green" else "white" for a in asked]
    assert color_oracle(x0, x1, masks, wrong)["oracle_accuracy"] == 0.0


def test_command_line(tmp_path, capsys):
    syn.main(["--out", str(tmp_path / "cli"), "--n", "3", "--resolution", "32", "--seed", "1", "--format", "jpg"])
    assert "wrote 3 birds" in capsys.readouterr().out
    rows = _read_rows(_cub(tmp_path / "cli") / "images.txt")
    assert len(rows) == 3 and rows[0][1].endswith(".jpg")
    assert Image.open(_cub(tmp_path / "cli") / "images" / rows[0][1]).size == (32, 32)
    assert syn.load_metadata(_cub(tmp_path / "cli"))["n"] == 3
    with pytest.raises(FileNotFoundError, match="pbw.data.synthetic"):
        syn.load_metadata(tmp_path)


def test_cub_datamodule_reads_the_synthetic_birds_unchanged(birds):
    from pbw.data.cub import CUBDataModule

    dm = CUBDataModule(
        root=str(birds),
        split="train",
        val_split="test",
        captions=True,
        resolution=64,
        batch_size=8,
        num_workers=0,
        xflip=False,
    )
    dm.setup("fit")
    assert dm.class_names[0] == "Red_Cardinal" and len(dm.class_names) == 12
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert -1 <= batch["image"].min() < batch["image"].max() <= 1
    test_rows = [r for r in _read_rows(_cub(birds) / "train_test_split.txt") if r[1] == "0"][:8]
    files = dict(_read_rows(_cub(birds) / "images.txt"))
    labels = dict(_read_rows(_cub(birds) / "image_class_labels.txt"))
    for k, (image_id, _) in enumerate(test_rows):
        rel = files[image_id]
        assert batch["label"][k].item() == int(labels[image_id]) - 1
        assert batch["caption"][k] == (birds / "text_c10" / rel).with_suffix(".txt").read_text().splitlines()[0]
        # pixels arrive unchanged, so the oracle reads the same colors from the batch
        expected = np.asarray(Image.open(_cub(birds) / "images" / rel), dtype=np.float32) / 127.5 - 1
        assert np.abs(batch["image"][k].permute(1, 2, 0).numpy() - expected).max() < 1e-5
        assert (
            oracle.part_colors(batch["image"][k], syn.load_part_map(birds, rel))
            == syn.load_metadata(birds)["images"][image_id]["part_colors"]
        )


def test_load_split_and_probes_with_a_perfect_and_a_blind_model(birds):
    images, colors, files = syn.load_split(birds, "test")
    flags = dict(_read_rows(_cub(birds) / "train_test_split.txt"))
    assert len(images) == len(colors) == len(files) == sum(v == "0" for v in flags.values())
    assert images.shape[1:] == (3, 64, 64) and -1 <= images.min() < images.max() <= 1
    assert len(syn.load_split(birds, "all", limit=5)[0]) == 5

    def perfect(imgs, texts):  # reads colors with the pixel oracle; scores the captions that state them
        truth = [oracle.part_colors(img, syn.load_part_map(birds, f)) for img, f in zip(imgs, files, strict=True)]
        stated = [{syn.canonical_caption(t, parts) for parts in [syn.PARTS] + [(p,) for p in syn.PARTS]} for t in truth]
        return torch.tensor([[float(text in s) for text in texts] for s in stated])

    assert probes.part_color_probe(perfect, images, colors) == dict.fromkeys(syn.PARTS, 1.0)
    assert probes.caption_retrieval_accuracy(perfect, images, colors) == 1.0
    blind = probes.part_color_probe(lambda imgs, texts: torch.zeros(len(imgs), len(texts)), images, colors)
    assert all(v < 0.6 for v in blind.values())
