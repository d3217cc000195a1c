"""Edits of several regions, each with its own words, and the pin that one-region edits stay as they were."""

import json
from pathlib import Path

import pytest
import torch

from pbw.editing import EditModule, Editor, EditRequest, EditResult, EditSettings, Region, load_mask
from pbw.editing.cli import main as edit_main
from pbw.editing.result import render_layers
from pbw.models.maskable import paint_regions
from pbw.models.stylegan2 import StyleGAN2Generator
from pbw.semantic import PromptSet, SemanticNet

PIN = Path(__file__).parent / "data" / "one_region_pin"
# The command that wrote the pin (pbw before edits had regions), rerun here with today's code.
PIN_ARGS = [
    "--config",
    "pbw/configs/edit/mini.yaml",
    "--prompt",
    "a bird with a red body",
    "--mask",
    "part:body",
    "--seed",
    "3",
    "--settings.population",
    "4",
    "--settings.generations",
    "2",
    "--settings.steps",
    "3",
    "--settings.crops",
    "2",
    "--progress",
    "false",
]


def test_one_region_edit_matches_the_saved_result_of_earlier_pbw(tmp_path):
    edit_main([*PIN_ARGS, "--out", str(tmp_path)])
    old = torch.load(PIN / "latents.pt", weights_only=True)
    new = torch.load(tmp_path / "latents.pt", weights_only=True)
    assert new["format_version"] == old["format_version"] == 2  # the same file format as before
    assert set(new) == set(old)
    for key in ("original", "edited", "w0", "mask"):
        torch.testing.assert_close(new[key], old[key], rtol=0, atol=1e-5)
    torch.testing.assert_close(new["latents"]["w"], old["latents"]["w"], rtol=0, atol=1e-5)
    assert new["prompt"] == old["prompt"] and new["space"] == old["space"]
    old_m = json.loads((PIN / "metrics.json").read_text())["metrics"]
    new_m = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert old_m.keys() <= new_m.keys()  # every pinned metric is still reported (later pbw adds some)
    # `semantic` and `loss` of the final metrics see random crops drawn from the global RNG (they differ
    # between processes); the crop-free view's score, preservation and realism are deterministic
    for k in ("semantic_score", "preservation_l1", "preservation_lpips", "realism"):
        v = old_m[k]
        assert abs(new_m[k] - v) <= 1e-4 * max(1.0, abs(v)), k
    # the edit did something: the body changed, so the pin is not of a no-op
    assert (old["edited"] - old["original"]).abs().mean() > 0.05


def test_a_result_written_before_regions_still_loads():
    res = EditResult.load(PIN)
    assert res.prompt == {"texts": ["a bird with a red body"], "weights": [1.0]}
    assert res.mask.shape == (1, 1, 64, 64) and res.edited.shape == (1, 3, 64, 64)
    assert res.regions == [] and len(res.layers) == 1 and res.layers[0].regions == 1


# ---- the generators' blend of K regions ------------------------------------------------------------
RES = 32


@pytest.fixture(scope="module")
def sg2():
    torch.manual_seed(1)
    return StyleGAN2Generator(RES, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16).eval()


def _ws(g, n=3):
    with torch.no_grad():
        return [g.encode(g.sample(1, seed=s)) for s in range(n)]


def test_paint_regions_is_the_over_rule_by_hand():
    base, r1, r2 = torch.full((1, 1, 2), 10.0), torch.full((1, 1, 2), 20.0), torch.full((1, 1, 2), 40.0)
    mask = torch.tensor([[[0.5, 1.0]], [[0.25, 0.0]]]).view(1, 2, 2)
    # x = r2 m2 + (r1 m1 + base (1 - m1)) (1 - m2): [(20*.5 + 10*.5)*.75 + 40*.25, 20] = [21.25, 20]
    assert paint_regions([r1, r2], base, mask).flatten().tolist() == [21.25, 20.0]
    with pytest.raises(ValueError, match="one each"):
        paint_regions([r1], base, mask)


@pytest.mark.parametrize("demodulation", ["blend", "frozen"])
def test_stylegan2_regions_reduce_to_one_region_and_later_wins(sg2, demodulation):
    w0, w1, w2 = _ws(sg2)
    sg2.masked_demodulation = demodulation
    m = load_mask("0,0,16,32", RES)[0]
    zero, one = torch.zeros_like(m), torch.ones_like(m)
    with torch.no_grad():
        one_region = sg2.decode(w1, w0, m)
        # a region whose mask is empty adds nothing, whichever place it has
        torch.testing.assert_close(sg2.decode([w1, w2], w0, torch.cat([m, zero], 1)), one_region)
        torch.testing.assert_close(sg2.decode([w2, w1], w0, torch.cat([zero, m], 1)), one_region)
        # where masks overlap the later region wins: two all-one masks are the second latent's image
        torch.testing.assert_close(sg2.decode([w1, w2], w0, torch.cat([one, one], 1)), sg2.decode(w2, w0, one))
        # two halves: each region changes its own half far more than the other one
        right = load_mask("16,0,32,32", RES)[0]
        both = sg2.decode([w1, w2], w0, torch.cat([m, right], 1))
        left_only = sg2.decode(w1, w0, m)
    sg2.masked_demodulation = "blend"
    assert (both - left_only)[..., 20:].abs().mean() > 2 * (both - left_only)[..., :12].abs().mean()
    with pytest.raises(ValueError, match="shape"):
        sg2.decode([w1, w2], w0, m)


def test_biggan_regions_blend_block0_features():
    from pbw.models.biggan import BigGANGenerator

    torch.manual_seed(0)
    g = BigGANGenerator(resolution=32, ch=4, dim_z=20, shared_dim=8, n_classes=3, attention=None).eval()
    codes = [g.sample(1, seed=s, classes=0) for s in range(3)]
    with torch.no_grad():
        w0, w1, w2 = (g.encode(c) for c in codes)
        m = load_mask("0,0,16,32", 32)[0]
        zero = torch.zeros_like(m)
        torch.testing.assert_close(
            g.decode([w1, w2], w0, torch.cat([m, zero], 1), cond=codes[0]), g.decode(w1, w0, m, cond=codes[0])
        )
        torch.testing.assert_close(
            g.decode([w1, w2], w0, torch.ones(1, 2, 32, 32), cond=codes[0]), g.decode(w2, cond=codes[0])
        )


# ---- the editing core ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return SemanticNet("pbw-tiny-clip", None, crops=2)


def test_region_loss_is_the_sum_of_each_regions_loss_on_its_own_view(sg2, clip):
    codes = sg2.sample(1, seed=5)
    left, right = load_mask("0,0,16,32", RES)[0], load_mask("16,0,32,32", RES)[0]
    red, blue = PromptSet.parse("a red bird"), PromptSet.parse("a blue bird | a sky::-1")
    two = EditModule(sg2, clip, [EditRequest(codes=codes, regions=[Region(red, left), Region(blue, right)])])
    ones = [EditModule(sg2, clip, [EditRequest(p, codes, m)]) for p, m in ((red, left), (blue, right))]
    assert two.latents["w"].shape == (2, 16)  # one latent per region
    with torch.no_grad():
        x = two.render()
        torch.testing.assert_close(x, ones[0].render())  # every region starts at w0: the start image
        terms = two.objective(x, crops=0)
        each = [m.objective(x, crops=0) for m in ones]
    torch.testing.assert_close(terms["semantic"], each[0]["semantic"] + each[1]["semantic"])
    torch.testing.assert_close(terms["semantic_score:2"], each[1]["semantic_score"])
    # preservation acts outside the union (here nothing), not outside one region's mask
    changed = x.clone()
    changed[..., 16:] += 0.5
    with torch.no_grad():
        assert float(two.objective(changed, crops=0)["preservation_l1"]) < 1e-6
        assert float(ones[0].objective(changed, crops=0)["preservation_l1"]) > 0.4


def test_joint_edit_optimizes_one_latent_per_region(sg2, clip):
    codes = sg2.sample(1, seed=2)
    left, right = load_mask("0,0,12,32", RES)[0], load_mask("20,0,32,32", RES)[0]
    req = EditRequest(
        codes=codes,
        name="two",
        regions=[Region(PromptSet.parse("a red bird"), left), Region(PromptSet.parse("a blue bird"), right)],
    )
    s = EditSettings(steps=3, population=6, generations=2, lr=0.05, crops=2)
    res = Editor(sg2, clip, device="cpu").run([req], s, progress=False)[0]
    assert res.layers[-1].latents["w"].shape == (2, 16) and res.layers[-1].mask.shape == (1, 2, RES, RES)
    assert not torch.equal(res.layers[-1].latents["w"][0], res.layers[-1].latents["w"][1])
    torch.testing.assert_close(res.mask, torch.maximum(left, right))
    w0 = res.w0[0, 0]
    assert all(not torch.allclose(w, w0) for w in res.layers[-1].latents["w"])  # each region's latent moved
    assert {"semantic_score:1", "semantic_score:2"} <= set(res.metrics)


def test_requests_of_one_and_two_regions_in_one_run_and_refusals(sg2, clip):
    m = load_mask("0,0,16,32", RES)[0]
    one = EditRequest(PromptSet.parse("a red bird"), sg2.sample(1, seed=1), m, "one")
    two = EditRequest(
        codes=sg2.sample(1, seed=1),
        name="two",
        regions=[Region(PromptSet.parse("a red bird"), m), Region(PromptSet.parse("a blue bird"), 1 - m)],
    )
    s = EditSettings(steps=1, population=4, generations=1, crops=1)
    a, b = Editor(sg2, clip, device="cpu").run([two, one], s, progress=False)
    assert a.name == "two" and len(a.regions) == 2 and b.name == "one" and b.regions == []
    with pytest.raises(ValueError, match="not both"):
        EditRequest(PromptSet.parse("x"), sg2.sample(1, seed=1), m, regions=two.regions)
    with pytest.raises(ValueError, match="needs a mask"):
        EditRequest(codes=sg2.sample(1, seed=1), regions=[Region(PromptSet.parse("x")), Region(PromptSet.parse("y"))])
    with pytest.raises(ValueError, match="mask_mode 'latent'"):
        EditModule(sg2, clip, [two], EditSettings(mask_mode="image"))


def test_result_of_regions_saves_as_format_4_and_replays(sg2, clip, tmp_path):
    m = load_mask("0,0,16,32", RES)[0]
    two = EditRequest(
        codes=sg2.sample(1, seed=3),
        regions=[Region(PromptSet.parse("a red bird"), m), Region(PromptSet.parse("a blue bird"), 1 - m)],
    )
    res = Editor(sg2, clip, device="cpu").run([two], EditSettings(steps=2, population=4, generations=1, crops=1))[0]
    res.save(tmp_path)
    data = torch.load(tmp_path / "latents.pt", weights_only=True)
    assert data["format_version"] == 4 and [r["prompt"]["texts"] for r in data["regions"]] == [
        ["a red bird"],
        ["a blue bird"],
    ]
    back = EditResult.load(tmp_path, sg2)
    assert [r["prompt"] for r in back.regions] == [r["prompt"] for r in res.regions]
    torch.testing.assert_close(render_layers(sg2, back.codes, back.w0, back.layers), res.edited, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "metrics.json").read_text())["regions"][1]["texts"] == ["a blue bird"]


# ---- the clients -----------------------------------------------------------------------------------
TINY = ["--settings.population", "4", "--settings.generations", "1", "--settings.steps", "1", "--progress", "false"]


@pytest.mark.slow
def test_edit_py_regions_on_the_command_line_and_in_a_requests_file(tmp_path, capsys):
    base = ["--config", "pbw/configs/edit/mini.yaml", "--seed", "3", *TINY]
    edit_main([*base, "--region", "a bird with a red body", "part:body", "--region", "a bird with blue wings",
               "part:wing", "--out", str(tmp_path / "one")])  # fmt: skip
    res = EditResult.load(tmp_path / "one")
    assert [r["prompt"]["texts"] for r in res.regions] == [["a bird with a red body"], ["a bird with blue wings"]]
    body, wing = (r["mask"] for r in res.regions)
    assert body.sum() > 0 and wing.sum() > 0 and float((body * wing).sum()) < float(body.sum())
    reqs = tmp_path / "r.jsonl"
    two = [{"prompt": "a bird with a red body", "mask": "part:body"}, {"prompt": "blue wings", "mask": "part:wing"}]
    reqs.write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {"name": "two", "regions": two},
                {"name": "one", "prompt": "a bird with a red body", "mask": "part:body"},
                {"name": "both", "prompt": "x", "regions": two},
                {"name": "bad", "regions": [{"prompt": "x"}]},
            )
        )
    )
    with pytest.raises(SystemExit) as stop:  # some requests failed: listed, the others edited, status 3
        edit_main([*base, "--requests", str(reqs), "--out", str(tmp_path / "many")])
    assert stop.value.code == 3
    rows = json.loads((tmp_path / "many" / "summary.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert rows[0]["prompt"] == "a bird with a red body / blue wings"
    assert "not both" in rows[2]["error"] and "regions must be a list" in rows[3]["error"]
    assert len(EditResult.load(rows[0]["folder"]).regions) == 2 and EditResult.load(rows[1]["folder"]).regions == []
    with pytest.raises(SystemExit) as e:
        edit_main([*base, "--prompt", "x", "--region", "y", "part:body", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "not both" in capsys.readouterr().err


def test_an_experiment_with_regions_is_checked():
    from pbw.reproduce.cli import load_experiment
    from pbw.reproduce.experiment import ExperimentError, validate

    exp = load_experiment("pbw/configs/reproduce/mini.yaml", ["--variants", "regions:"])
    assert [v.regions for v in exp.tasks["two_regions"].variants] == ["joint", "sequential", "merged"]
    validate(exp)
    with pytest.raises(ExperimentError, match="need task regions"):
        validate(load_experiment("pbw/configs/reproduce/mini.yaml", ["--tasks.masked_edits.judges", "[part_oracle]"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--blocks", "regions,nope"], "unknown blocks ['nope']"),
        (["--blocks", "regions", "--pairs", "red"], "body/wings"),
    ],
)
def test_grid_regions_block_input_errors(capsys, args, message):
    from pbw.reproduce.cli import main

    with pytest.raises(SystemExit) as e:
        main(["grid", *args, "--out", "unused.png"])
    assert e.value.code == 2 and message in capsys.readouterr().err
