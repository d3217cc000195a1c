"""edit.py end to end on a tiny StyleGAN2 and a tiny random CLIP."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import pbw.checkpoints
from pbw.editing.cli import build_parser, main
from pbw.editing.figures import GAP
from pbw.models.stylegan2 import StyleGAN2Generator

RES = 32
FAST = [
    "--clip",
    "pbw-tiny-clip:random",
    "--settings.crops",
    "2",
    "--settings.steps",
    "2",
    "--settings.generations",
    "1",
    "--settings.population",
    "4",
    "--lpips",
    "false",
    "--progress",
    "false",
    "--device",
    "cpu",
]
FILES = ["original.png", "edited.png", "mask.png", "comparison.png", "metrics.json", "latents.pt"]


@pytest.fixture
def generator(monkeypatch):
    """`load_generator` gives a tiny StyleGAN2 for 'tiny.ckpt', a non-generator for 'linear.ckpt'."""
    torch.manual_seed(0)
    g = StyleGAN2Generator(RES, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)

    def load(path):
        if str(path).endswith("tiny.ckpt"):
            return g
        if str(path).endswith("linear.ckpt"):
            return nn.Linear(2, 2)
        raise ValueError(f"{path}: unknown checkpoint format")

    monkeypatch.setattr(pbw.checkpoints, "load_generator", load, raising=False)
    return g


def test_single_edit_writes_every_file(tmp_path, generator):
    out = tmp_path / "out"
    main(
        [
            "--generator",
            "tiny.ckpt",
            "--prompt",
            "a red head::2 | a crown",
            "--negative",
            "blurry",
            "--mask",
            "0.25,0.25,0.75,0.75",
            "--seed",
            "3",
            "--out",
            str(out),
            *FAST,
        ]
    )
    for f in FILES:
        assert (out / f).is_file(), f
    width, height = Image.open(out / "comparison.png").size
    assert width == 3 * 256 + 4 * GAP and height > 256 + 2 * GAP  # original | mask | edited, upscaled 8x, labelled
    assert Image.open(out / "edited.png").size == (RES, RES)
    mask = np.asarray(Image.open(out / "mask.png").convert("L"))
    assert mask[RES // 2, RES // 2] == 255 and mask[0, 0] == 0
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["prompt"] == ["a red head", "a crown", "blurry"] and meta["prompt_weights"] == [2.0, 1.0, -1.0]
    assert meta["settings"]["optimizer"] == "cma+adam" and meta["settings"]["steps"] == 2
    for k in ("loss", "semantic_score", "preservation_l1", "preservation_lpips"):
        assert k in meta["metrics"]
    lat = torch.load(out / "latents.pt")
    assert lat["space"] == "w" and lat["latents"]["w"].shape == (1, 16)  # the paper's one broadcast w
    assert lat["w0"].shape == (1, generator.num_ws, 16)
    assert torch.equal(lat["codes"]["z"], generator.sample(1, seed=3)["z"])


def test_config_file_and_resized_mask_note(tmp_path, generator):
    big = np.zeros((64, 64), np.uint8)
    big[16:48, 16:48] = 255
    Image.fromarray(big).save(tmp_path / "mask.png")
    cfg = tmp_path / "edit.yaml"
    cfg.write_text(
        "generator: tiny.ckpt\nprompt: a blue wing\nclip: pbw-tiny-clip:random\nlpips: false\n"
        "progress: false\ndevice: cpu\nsettings:\n  optimizer: adam\n  steps: 2\n  crops: 2\n"
    )
    out = tmp_path / "o"
    main(["--config", str(cfg), "--mask", str(tmp_path / "mask.png"), "--out", str(out)])
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["settings"]["optimizer"] == "adam" and len(meta["history"]) == 2
    assert any("64x64, resized" in n for n in meta["notes"])


def test_shipped_configs_parse():
    for name, cls in (("stylegan2_cub", None), ("biggan_places", 205)):
        argv = ["--config", f"pbw/configs/edit/{name}.yaml", "--prompt", "x"] + (["--class", str(cls)] if cls else [])
        p = build_parser()
        a = p.instantiate(p.parse_args(argv))
        s = a.settings
        assert (s.population, s.sigma0, s.generations, s.steps, s.lr, s.lam, s.crops) == (
            50,
            0.5,
            20,
            100,
            0.01,
            5.0,
            32,
        )
        assert a.clip == "ViT-B-32:openai" and s.optimizer == "cma+adam" and s.space is None and a.class_ == cls
    for name in ("mini", "mini_biggan"):
        p = build_parser()
        p.instantiate(p.parse_args(["--config", f"pbw/configs/edit/{name}.yaml", "--prompt", "x"]))


def test_requests_batch_reports_failures_and_continues(tmp_path, generator):
    reqs = tmp_path / "r.jsonl"
    lines = [
        {"name": "head", "prompt": "a red head", "mask": "0,0,16,16", "seed": 1},
        {"name": "empty", "prompt": "x", "mask": "0,0,0,0"},
        "{not json",
        {"name": "wing", "prompt": "a blue wing", "mask": "0.5,0.5,1,1", "seed": 2},
        {"name": "whole", "prompt": "a bird", "seed": 4},
        {"name": "typo", "promt": "a bird"},
    ]
    reqs.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "batch"
    with pytest.raises(SystemExit) as e:  # some requests failed: exit status 3
        main(
            [
                "--generator",
                "tiny.ckpt",
                "--requests",
                str(reqs),
                "--out",
                str(out),
                "--settings.batch_size",
                "2",
                *FAST,
            ]
        )
    assert e.value.code == 3
    rows = json.loads((out / "summary.json").read_text())
    status = [r["status"] for r in rows]
    assert status == ["ok", "failed", "failed", "ok", "ok", "failed"]
    assert "empty" in rows[1]["error"] and "not JSON" in rows[2]["error"] and "promt" in rows[5]["error"]
    for r in rows:
        if r["status"] == "ok":
            assert Path(r["folder"]).parent == out
            for f in FILES if r["name"] != "whole" else set(FILES) - {"mask.png"}:  # whole image: no mask
                assert (Path(r["folder"]) / f).is_file(), (r["name"], f)
    with open(out / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["status"] for t in table] == status and float(table[0]["semantic_score"]) <= 1
    assert table[4]["preservation_l1"] == ""  # whole image: nothing to preserve


def test_requests_rerun_resumes_refuses_other_settings_and_restarts(tmp_path, generator, capsys):
    reqs = tmp_path / "r.jsonl"
    reqs.write_text(
        "".join(json.dumps({"prompt": "a red head", "mask": "0,0,16,16", "seed": i}) + "\n" for i in range(3))
    )
    argv = ["--generator", "tiny.ckpt", "--requests", str(reqs), "--out", str(tmp_path / "o"), *FAST]
    first = main([*argv, "--settings.batch_size", "2"])
    saved = {p: p.stat().st_mtime_ns for p in (tmp_path / "o").rglob("record.json")}
    assert len(saved) == 3
    capsys.readouterr()
    again = main([*argv, "--settings.batch_size", "2", "--progress", "true"])  # how it reports may change
    out = capsys.readouterr().out
    assert "3 request(s) to edit, 3 resumed" in out and " done," not in out  # nothing edited again
    assert {p: p.stat().st_mtime_ns for p in saved} == saved and again == first
    err = _input_error(capsys, [*argv, "--settings.batch_size", "4"])
    assert "settings.batch_size: 2 before, 4 now" in err and "--restart" in err
    main([*argv, "--settings.batch_size", "4", "--restart", "true"])
    assert "3 request(s) to edit, 0 resumed" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != t for p, t in saved.items())


def _input_error(capsys, argv) -> str:
    """Run edit.py expecting an input error: exit status 2 and one line on stderr; returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("pbw-edit: error: "), err
    return err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--generator", "linear.ckpt", "--prompt", "x"], "holds a Linear, not a generator"),
        (["--generator", "weird.bin", "--prompt", "x"], "unknown checkpoint format"),
        (["--generator", "tiny.ckpt"], "give --prompt"),
        (["--generator", "tiny.ckpt", "--prompt", "x", "--mask", "nope.png"], "neither an existing file"),
        (["--generator", "tiny.ckpt", "--prompt", "x", "--settings.space", "wplus2"], "its spaces are w, wplus, z"),
        (["--generator", "tiny.ckpt", "--prompt", "x", "--settings.optimizer", "sgd"], "optimizer must be one of"),
        (["--generator", "tiny.ckpt", "--prompt", "x", "--requests", "missing.jsonl"], "missing.jsonl"),
    ],
)
def test_input_errors_are_one_line_and_status_2(tmp_path, generator, capsys, extra, message):
    assert message in _input_error(capsys, [*FAST, "--out", str(tmp_path), *extra])


def test_debug_shows_the_traceback(tmp_path, generator):
    with pytest.raises(ValueError, match="neither an existing file"):
        main([*FAST, "--generator", "tiny.ckpt", "--prompt", "x", "--mask", "nope.png", "--debug", "true"])


def test_real_pbw_checkpoint(tmp_path):
    """With pbw.checkpoints.load_generator (lands with the trainers): a checkpoint in pbw's
    convention edits; a file that is not a generator checkpoint is refused."""
    if not hasattr(pbw.checkpoints, "load_generator"):
        pytest.skip("pbw.checkpoints.load_generator not available yet")
    kwargs = dict(resolution=RES, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
    g = StyleGAN2Generator(**kwargs)
    ckpt = {
        "state_dict": {f"generator.{k}": v for k, v in g.state_dict().items()},
        "pbw": {"family": "stylegan2", "generator": kwargs, "discriminator": None, "format_version": 1},
    }
    torch.save(ckpt, tmp_path / "g.ckpt")
    out = tmp_path / "out"
    main(
        ["--generator", str(tmp_path / "g.ckpt"), "--prompt", "a bird", "--mask", "0,0,16,16", "--out", str(out), *FAST]
    )
    assert all((out / f).is_file() for f in FILES)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "junk.ckpt")
    with pytest.raises(SystemExit) as e:
        main(["--generator", str(tmp_path / "junk.ckpt"), "--prompt", "x", "--out", str(out), *FAST])
    assert e.value.code == 2
