"""`python -m pbw.reproduce mini` end to end on a tiny slice: files, table fields, sane values."""
import json

import numpy as np
import torch
from PIL import Image

from pbw.assets import mini_generator_path
from pbw.checkpoints import load_generator
from pbw.data.synthetic import generate
from pbw.evaluation import wilson_interval
from pbw.reproduce import BIGGAN_ROW, PAPER, TABLE_COLUMNS, TEXT_TO_IMAGE, VARIANTS, colors_present, main


def test_colors_present_reads_pixels():
    img = torch.full((3, 8, 8), -1.0)  # black
    img[0, :4] = 200 / 127.5 - 1  # top half red (200, 30, 30)
    img[1, :4] = 30 / 127.5 - 1
    img[2, :4] = 30 / 127.5 - 1
    mask = torch.ones(8, 8)
    assert colors_present(img, mask) == {"red", "black"}
    mask[:4] = 0
    assert colors_present(img, mask) == {"black"}


def test_reproduce_mini_tiny_slice(tmp_path):
    data = tmp_path / "birds"
    generate(data, n=40, resolution=32, seed=0)
    out = tmp_path / "out"
    main(["mini", "--quick", "--out", str(out), "--data", str(data), "--seeds", "1", "--colors", "2",
          "--captions", "2", "--steps", "1", "--generations", "1", "--population", "2",
          "--lr", "0.2", "--first-seed", "7"])
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["lr"] == 0.2 and results["scale"]["first_seed"] == 7
    g = load_generator(mini_generator_path())
    codes = g.sample(1, seed=7)
    with torch.no_grad():
        first = ((g.decode(g.encode(codes), cond=codes)[0].clamp(-1, 1) + 1) * 127.5).round()
    grid = torch.from_numpy(np.array(Image.open(out / "grid_adam_only.png").convert("RGB"))).permute(2, 0, 1)
    assert (grid[:, 1:33, 1:33].float() - first).abs().max() <= 1  # the first original is sample seed 7
    assert set(results["variants"]) == set(VARIANTS) | {"reference: unedited originals", BIGGAN_ROW}
    for name, row in results["variants"].items():
        assert row["n"] == 2
        assert set(TABLE_COLUMNS) <= set(row)
        assert 0.0 <= row["region_accuracy"] <= 1.0
        if row["kind"] == "masked edit":
            assert 0.0 <= row["oracle_accuracy"] <= 1.0
            hits = round(row["oracle_accuracy"] * row["n"])
            assert row["oracle_ci95"] == list(wilson_interval(hits, row["n"]))
        assert row["fid"] >= 0 and row["kid"] == row["kid"]
    paper = results["variants"][PAPER]
    assert paper["change_inside"] > 0 and paper["space"] == "w"  # the paper's edit: one broadcast w
    assert results["variants"]["space: W+ (one w per layer)"]["space"] == "wplus"
    t2i = results["text_to_image"]
    assert set(t2i) == set(TEXT_TO_IMAGE)
    assert [t2i[n]["space"] for n in TEXT_TO_IMAGE] == ["z", "w", "wplus", "z"]
    assert all(r["n"] == 2 and r["captions"][0].startswith("this bird has") for r in t2i.values())
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in [*results["variants"], *t2i]) and "oracle_accuracy" in table
    grid = Image.open(out / "grid_adam_only.png")
    assert grid.size[1] > 3 * 32  # original, mask and edited rows
    assert (out / "grid_biggan.png").is_file() and len(list(out.glob("grid_text_to_image_*.png"))) == 4
