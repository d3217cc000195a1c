"""The bundled miniature models load offline and drive a real edit through edit.py."""

import json

import pytest
import torch
from PIL import Image

from pbw.assets import MINI_DIR, bundle_mini, mini_clip_spec, mini_generator_path
from pbw.checkpoints import load_generator
from pbw.editing.cli import main
from pbw.editing.options import build_parser
from pbw.semantic import SemanticNet


def test_bundle_loads_and_is_small():
    total = sum(p.stat().st_size for p in MINI_DIR.rglob("*") if p.is_file())
    assert total < 25 * 2**20, f"bundle is {total / 2**20:.1f} MiB"
    g = load_generator(mini_generator_path())
    assert g.resolution == 64 and g.discriminator is not None
    assert all(p.dtype == torch.float32 for p in g.parameters())  # stored fp16, loaded as fp32
    x = g.decode(g.encode(g.sample(2, seed=0)))
    assert x.shape == (2, 3, 64, 64) and torch.isfinite(x).all()
    assert g.discriminator(x).shape[0] == 2
    clip = SemanticNet.from_spec(mini_clip_spec(), crops=0)
    assert clip.image_size == 64
    gb = load_generator(mini_generator_path("biggan"))
    codes = gb.sample(2, seed=0, classes=[0, 11])
    x = gb.decode(gb.encode(codes), cond=codes)
    assert x.shape == (2, 3, 64, 64) and gb.n_classes == 12 and gb.discriminator(x, codes["class"]).shape[0] == 2
    with pytest.raises(ValueError, match="stylegan2"):
        mini_generator_path("stylegan3")


def test_bundle_mini_roundtrip(tmp_path):
    # re-bundling the bundle (pbw format in, EMA generator + D out) gives the same images
    sizes = bundle_mini(mini_generator_path(), MINI_DIR / "clip", tmp_path, biggan_ckpt=mini_generator_path("biggan"))
    assert set(sizes) == {
        "stylegan2.ckpt",
        "biggan.ckpt",
        "clip/open_clip_config.json",
        "clip/open_clip_model.safetensors",
    }
    a, b = load_generator(mini_generator_path()), load_generator(tmp_path / "stylegan2.ckpt")
    codes = a.sample(1, seed=3)
    assert torch.allclose(a.decode(a.encode(codes)), b.decode(b.encode(codes)), atol=1e-3)


def test_edit_py_default_clip_is_the_paper_one():
    assert build_parser().get_defaults().clip == "ViT-B-32:openai"


@pytest.mark.parametrize("config, extra", [("mini.yaml", []), ("mini_biggan.yaml", ["--class", "3"])])
def test_quick_edit_with_the_bundle(tmp_path, config, extra):
    out = tmp_path / "first"
    rows = main(
        [
            "--config",
            f"edit/{config}",  # a shipped config, by name
            "--prompt",
            "a bird with a red body",
            "--mask",
            "0.25,0.25,0.75,0.75",
            "--out",
            str(out),
            "--settings.steps",
            "2",
            "--settings.generations",
            "1",
            "--settings.population",
            "4",
            "--progress",
            "false",
            *extra,
        ]
    )
    assert len(rows) == 1
    comparison = Image.open(out / "comparison.png")
    assert comparison.size[0] > 3 * 256 and comparison.size[1] > 256
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["clip"] == "bundled:clip" and metrics["settings"]["lpips"] is False
    assert {"semantic_score", "realism", "preservation_l1"} <= set(metrics["metrics"])
