"""The part segmenter: part masks that follow a drawn bird (--mask part:body), clear errors for bad part
names, the bird rate, and a tiny segmenter that trains, saves and loads."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pbw.assets import mini_segmenter_path
from pbw.data.synthetic import PART_LABELS, PARTS, draw_birds
from pbw.editing.masks import MaskError, is_part_spec, load_mask
from pbw.evaluation import segmenter as sg


@pytest.fixture(scope="module")
def birds32():
    return draw_birds(16, 32, seed=4343)  # a world the segmenter never saw


def _iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("resolution", [32, 64])
def test_part_mask_matches_the_drawn_part_map(resolution):
    """The drawn part maps, where a wing drawn in the body's palette color counts as body (a person sees one
    body there; a shade apart at most)."""
    birds = draw_birds(8, resolution, seed=4344)  # IoU over the 8 birds (one bird's edge pixels weigh a lot at 32 px)
    wing = PARTS.index("wing")
    same = birds.part_colors[:, 0] == birds.part_colors[:, wing]
    assert 0 < same.sum() < len(birds)  # both kinds of bird
    for spec, labels in (("part:body", ["body"]), ("part:head+wing", ["head", "wing"])):
        masks, truth = [], []
        for k in range(len(birds)):
            mask, notes = load_mask(spec, resolution, image=birds.tensors()[k : k + 1])
            assert mask.shape == (1, 1, resolution, resolution) and labels[0] in notes[0]
            masks.append(mask[0, 0] > 0.5)
            names = labels + (["wing"] if labels == ["body"] and same[k] else [])
            truth.append(np.isin(birds.part_maps[k], [PART_LABELS[p] for p in names]))
        assert _iou(torch.stack(masks), np.stack(truth)) > 0.8


def test_fill_holes_and_the_body_colored_wing():
    ring = torch.zeros(9, 9, dtype=torch.bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a hole
    cup = ring.clone()
    cup[4, 4:] = False  # open to the border: no hole
    assert sg.fill_holes(ring).sum() == 25 and torch.equal(sg.fill_holes(cup), cup)
    # a body (label 1) around a wing (label 3), in palette yellow (240, 220, 40); the wing a shade darker, then blue
    lm = torch.zeros(9, 9, dtype=torch.long)
    lm[2:7, 2:7] = PART_LABELS["body"]
    lm[3:6, 3:6] = PART_LABELS["wing"]
    image = torch.full((9, 9, 3), 100.0)
    image[lm == PART_LABELS["body"]] = torch.tensor([240.0, 220.0, 40.0])
    image[lm == PART_LABELS["wing"]] = torch.tensor([215.0, 195.0, 30.0])
    as_tensor = lambda x: (x / 127.5 - 1).permute(2, 0, 1)  # noqa: E731
    assert sg.wing_is_body_colored(lm, as_tensor(image))
    image[lm == PART_LABELS["wing"]] = torch.tensor([30.0, 60.0, 200.0])
    assert not sg.wing_is_body_colored(lm, as_tensor(image))
    assert not sg.wing_is_body_colored(torch.where(lm == 3, 0, lm), as_tensor(image))  # no wing found


def test_bad_part_names_and_missing_image():
    image = torch.zeros(1, 3, 32, 32)
    with pytest.raises(MaskError, match="unknown bird part 'foot'; the parts are body, head, wing, tail, beak"):
        load_mask("part:body+foot", 32, image=image)
    with pytest.raises(MaskError, match="needs that image"):
        load_mask("part:body", 32)
    assert sg.parse_parts("wings+belly+bill") == ["wing", "body", "beak"]  # caption words work too
    assert is_part_spec("part:tail") and is_part_spec(" PART:tail") and not is_part_spec("0,0,1,1")


def test_segmenter_iou_and_bird_rate_on_real_birds(birds32):
    net = sg.load_segmenter()
    ious = sg.iou(sg.segment(birds32.tensors(), net), birds32.part_maps)
    assert min(ious.values()) > 0.6 and ious["body"] > 0.85, ious
    rate = sg.bird_rate(birds32.tensors(), net)
    assert rate["value"] >= 0.9 and rate["n"] == 16
    noise = sg.bird_rate(torch.rand(16, 3, 32, 32) * 2 - 1, net)
    assert noise["value"] <= 0.1
    for kind in ("judge", "masks"):
        assert mini_segmenter_path(kind).stat().st_size < 2 * 2**20
    held = net.info["heldout"]["32px"]
    assert held["bird_rate"]["n"] >= 300 and held["bird_rate"]["value"] > 0.95
    blobs = net.info["heldout"]["negatives_32px"]["blobs"]  # the judge sees no bird in colored blobs
    assert blobs["n"] >= 100 and blobs["value"] < 0.05


def test_caption_oracle_reads_the_drawn_birds_as_their_captions_say():
    """The text-to-image oracle on real birds with their own drawn part colors (the truth) and with
    another bird's: it must tell the two apart, wherever the bird sits in the picture."""
    from pbw.data.synthetic import COLOR_NAMES
    from pbw.evaluation.judges import caption_oracle

    birds = draw_birds(48, 64, seed=4345)
    colors = [{p: COLOR_NAMES[c] for p, c in zip(PARTS, row, strict=True)} for row in birds.part_colors]
    own = caption_oracle(birds.tensors(), colors)
    assert own["oracle_accuracy"] >= 0.95 and own["caption_part_accuracy"] >= 0.9, own
    others = colors[1:] + colors[:1]  # each image judged against the next bird's caption
    same_body = np.mean([a["body"] == b["body"] for a, b in zip(colors, others, strict=True)])
    wrong = caption_oracle(birds.tensors(), others)
    assert wrong["oracle_accuracy"] <= same_body + 0.1 and wrong["caption_part_accuracy"] < 0.6, (wrong, same_body)
    sky = torch.tensor([-0.3, 0.2, 0.8])[None, :, None, None].expand(2, 3, 64, 64)  # no bird: no body, a miss
    assert caption_oracle(sky, colors[:2])["oracle_accuracy"] == 0


def test_whole_bird_needs_every_part_in_its_range():
    maps = np.zeros((3, 10, 10), np.uint8)
    for j, p in enumerate(PARTS):
        maps[:, j, :2] = PART_LABELS[p]  # every part 2% of the image
    maps[1, PARTS.index("tail"), :2] = 0  # image 1 has no tail
    maps[2, 6:, :] = PART_LABELS["body"]  # image 2 is mostly body
    ranges = {p: [0.01, 0.1] for p in PARTS}
    ok = sg.is_whole_bird(maps, ranges)
    assert ok[:, -1].tolist() == [True, False, False]
    assert ok[1, PARTS.index("tail")] == False and ok[2, PARTS.index("body")] == False  # noqa: E712
    r = sg.share_ranges(np.repeat(maps[:1], 50, 0), low_factor=0.5, high_factor=2)
    assert r["beak"] == pytest.approx([0.01, 0.04])


def test_edit_request_with_a_part_mask():
    from pbw.assets import mini_generator_path
    from pbw.checkpoints import load_generator
    from pbw.editing.cli import make_request

    g = load_generator(mini_generator_path())
    defaults = SimpleNamespace(
        prompt="a bird with a red body", negative=None, class_=None, seed=0, mask=None, feather=0.0
    )
    found = 0
    for seed in range(16):  # the first bundle draws few whole birds: some start images have no part at all
        try:
            req = make_request(g, {"mask": "part:body+head+wing+tail+beak", "seed": seed}, defaults)
        except MaskError as e:
            assert "finds no body+head+wing+tail+beak in the start image" in str(e)
            continue
        found += 1
        image = g.decode(g.encode(req.codes))
        assert req.mask.shape == (1, 1, g.resolution, g.resolution) and req.notes and "segmenter" in req.notes[0]
        found_parts = sg.segment(image, sg.load_segmenter(kind="masks"))[0] > 0
        mask = req.mask[0, 0] > 0.5  # the parts found, and the few background specks they enclose
        assert mask[found_parts].all() and (mask & ~found_parts).sum() <= 0.05 * mask.sum()
    assert found >= 8  # the mask segmenter finds the parts of imperfect birds too
    with pytest.raises(ValueError, match="the parts are"):
        make_request(g, {"mask": "part:paws"}, defaults)


def test_tiny_segmenter_trains_saves_and_loads(tmp_path):
    info = sg.train_segmenter(
        tmp_path / "s.safetensors", n=8, steps=2, batch_size=4, width=8, heldout=4, log=lambda s: None
    )
    assert set(info["share_ranges"]) == set(PARTS) and set(info["heldout"]) == {"64px", "32px", "negatives_32px"}
    net = sg.load_segmenter(tmp_path / "s.safetensors")
    assert net.info["share_ranges"] == info["share_ranges"]
    assert sg.segment(torch.zeros(2, 3, 32, 32), net).shape == (2, 32, 32)
    assert "IoU" in sg.summary(info)


def test_generator_report_of_a_generator_that_draws_real_birds():
    from pbw.evaluation.birds import generator_report, markdown

    class RealBirds:  # a "generator" whose samples are real birds of the asked class
        is_conditional, n_classes = True, 12

        def eval(self):
            return self

        def sample(self, n, seed=None, classes=None):
            return {"class": torch.as_tensor(classes)}

        def encode(self, codes):
            return codes["class"]

        def decode(self, w, cond=None):
            birds = draw_birds(36, 32, seed=12)
            return torch.stack([birds.tensors()[np.flatnonzero(birds.species == int(c))[0]] for c in w])

    r = generator_report(RealBirds(), n=12)
    assert r["bird_rate"]["value"] >= 0.75 and r["species_accuracy"]["value"] >= 0.75 and r["resolution"] == 32
    assert r["species_spread"] > 8  # one bird of each of the 12 species: 12 if all are recognised
    assert np.isfinite(r["fid"]) and "| 12 |" in markdown({"real": r})


def test_species_spread_is_the_exponential_of_the_entropy():
    from pbw.evaluation.birds import effective_number

    assert effective_number(torch.arange(12), 12) == pytest.approx(12)
    assert effective_number(torch.tensor([3, 3, 3, 3]), 12) == pytest.approx(1)
    # half one species, a quarter each of two: entropy 1.5 bits, 2^1.5 = 2.83 equally common species
    assert effective_number(torch.tensor([0, 0, 1, 2]), 12) == pytest.approx(2**1.5)


def test_an_empty_part_mask_is_an_error_unless_allowed():
    sky = torch.zeros(1, 3, 32, 32)
    sky[:, 2] = 0.8  # a blue sky, no bird
    with pytest.raises(MaskError, match="finds no beak"):
        load_mask("part:beak", 32, image=sky)
    mask, _ = load_mask("part:beak", 32, image=sky, allow_empty=True)
    assert mask.sum() == 0
