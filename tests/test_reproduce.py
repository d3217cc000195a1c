"""`python -m pbw.reproduce mini` (the alias of the runner on pbw/configs/reproduce/mini_quick.yaml) end to end on
a tiny slice: files, table fields, sane values; the alias's options land on the config's fields."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pbw.assets import mini_generator_path
from pbw.checkpoints import load_generator
from pbw.data.synthetic import generate
from pbw.editing.masks import load_mask
from pbw.evaluation import wilson_interval
from pbw.evaluation.judges import change_inside_outside
from pbw.evaluation.segmenter import part_mask
from pbw.reproduce import BIGGAN_ROW, BOX_ROW, PAPER, TABLE_COLUMNS, TEXT_TO_IMAGE, VARIANTS, load_experiment, main
from pbw.reproduce.mini import MASK_BOX, mini_config, mini_overrides


def test_mini_options_map_onto_the_config():
    exp = load_experiment(
        mini_config(quick=True),
        mini_overrides(
            data="/d",
            seeds=3,
            colors=3,
            captions=5,
            first_seed=7,
            first_caption=2,
            steps=9,
            lr=0.2,
            population=6,
            generations=3,
            biggan="/b.ckpt",
        ),
    )
    masked, t2i = exp.tasks["masked_edits"], exp.tasks["text_to_image"]
    assert (exp.real.path, masked.seeds, masked.first_seed, t2i.first_seed) == ("/d", 3, 7, 1007)
    assert masked.prompts.values == {"color": ["red", "blue", "green"]}
    assert (t2i.prompts.count, t2i.prompts.first, t2i.settings) == (5, 2, {"lr": 0.2})  # --lr reaches both tasks
    assert (exp.settings.steps, exp.settings.lr, exp.settings.population, exp.settings.generations) == (9, 0.2, 6, 3)
    assert exp.generators["biggan"].path == "/b.ckpt" and not exp.generators["biggan"].optional
    full = load_experiment(mini_config(quick=False))
    assert [v.name for v in full.tasks["masked_edits"].variants] == [
        *VARIANTS,
        "reference: unedited originals",
        BIGGAN_ROW,
    ]
    t2i_rows = [v.name for v in full.tasks["text_to_image"].variants]
    assert t2i_rows == list(TEXT_TO_IMAGE)
    rows = {v.name: v for v in full.tasks["masked_edits"].variants}
    assert full.tasks["masked_edits"].masks.part == "body" and rows[BOX_ROW].masks.box == MASK_BOX  # box: an ablation
    assert "in the body the part segmenter finds" in full.tasks["masked_edits"].title
    assert (
        full.settings.steps,
        full.tasks["masked_edits"].seeds,
        len(full.tasks["masked_edits"].prompts.values["color"]),
        full.tasks["text_to_image"].prompts.count,
        full.real.limit,
    ) == (60, 8, 8, 64, 512)


def test_reproduce_mini_tiny_slice(tmp_path):
    data = tmp_path / "birds"
    generate(data, n=40, resolution=64, seed=0, progress=False)
    out = tmp_path / "out"
    main(
        [
            "mini",
            "--quick",
            "--out",
            str(out),
            "--data",
            str(data),
            "--seeds",
            "1",
            "--colors",
            "2",
            "--captions",
            "2",
            "--steps",
            "1",
            "--generations",
            "1",
            "--population",
            "2",
            "--lr",
            "0.2",
            "--first-seed",
            "7",
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["lr"] == 0.2
    masked, t2i = results["tasks"]["masked_edits"], results["tasks"]["text_to_image"]
    assert [r["seed"] for r in masked["requests"]["stylegan2"]] == [7, 7]
    g = load_generator(mini_generator_path())
    res = g.resolution
    codes = g.sample(1, seed=7)
    with torch.no_grad():
        first = ((g.decode(g.encode(codes), cond=codes)[0].clamp(-1, 1) + 1) * 127.5).round()
    shown = masked["images"]["ablation: adam only"]["original"][0]
    shown = torch.from_numpy(np.array(Image.open(out / "gallery" / shown).convert("RGB"))).permute(2, 0, 1)
    assert (shown.float() - first).abs().max() <= 1  # the first original is seed 7
    assert all("the body the part segmenter finds" in r["notes"][0] for r in masked["requests"]["stylegan2"])
    # the change judge: inside and outside each row's own mask (the body in seed 7's image; the box ablation's box)
    x0 = (first / 127.5 - 1)[None].expand(2, 3, res, res)
    body = part_mask(x0[0], "body")
    masks = {PAPER: body, BOX_ROW: load_mask(MASK_BOX, res)[0][0, 0]}
    for row, mask in masks.items():
        x1 = torch.stack(
            [
                torch.from_numpy(np.array(Image.open(out / "gallery" / path))).permute(2, 0, 1).float() / 127.5 - 1
                for path in masked["images"][row]["edited"]
            ]
        )
        want = change_inside_outside(x0, x1, mask.expand(2, 1, res, res))
        got = masked["rows"][row]["change_inside"], masked["rows"][row]["change_outside"]
        assert got == pytest.approx(want, abs=3e-3), row
    assert list(masked["rows"]) == [*VARIANTS, "reference: unedited originals", BIGGAN_ROW]
    for row in masked["rows"].values():
        assert row["n"] == 2
        assert set(TABLE_COLUMNS) <= set(row)
        assert 0.0 <= row["region_accuracy"] <= 1.0
        if row["kind"] == "masked edit":
            assert 0.0 <= row["oracle_accuracy"] <= 1.0
            hits = round(row["oracle_accuracy"] * row["n"])
            assert row["oracle_ci95"] == list(wilson_interval(hits, row["n"]))
        assert row["fid"] >= 0 and row["kid"] == row["kid"]
    paper = masked["rows"][PAPER]
    assert paper["change_inside"] > 0 and paper["space"] == "w"  # the paper's edit: one broadcast w
    assert masked["rows"]["space: W+ (one w per layer)"]["space"] == "wplus"
    assert list(t2i["rows"]) == list(TEXT_TO_IMAGE)
    assert [t2i["rows"][n]["space"] for n in TEXT_TO_IMAGE] == ["z", "z", "w", "wplus", "z"]
    assert all(r["n"] == 2 and "realism" in r["before"] for r in t2i["rows"].values())
    assert all(r["prompt"].startswith("this bird has") for r in t2i["requests"]["stylegan2"])
    # realism preferences of the paper's row against the other StyleGAN2 rows (no evaluator in the miniature)
    assert {(p["b"], p["criterion"]) for p in masked["preferences"]} == {(v, "realism") for v in VARIANTS[1:]}
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in [*masked["rows"], *t2i["rows"]]) and "oracle_accuracy" in table
    grid = Image.open(out / "grids" / "masked_edits__ablation_adam_only.png")
    assert grid.size[1] > 3 * res  # original, mask and edited rows, labelled
    assert (out / "grids" / "masked_edits__BigGAN_cma_adam_w_block_0_features_latent_mask.png").is_file()
    assert len(list((out / "grids").glob("text_to_image__*.png"))) == len(TEXT_TO_IMAGE)
    assert (out / "gallery" / "index.html").is_file()
