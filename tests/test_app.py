"""The app on a tiny StyleGAN2 and a tiny random CLIP: the handlers with synthetic brush layers, then
the real page end to end in headless Debian Chromium, driven by Playwright (no browser download).

The browser test loads the page, samples, picks an image, paints a stroke on the canvas, types
words, presses Paint, and checks that an edited image and the metrics appear. Its screenshot after
the edit goes to $PBW_APP_SCREENSHOT when set (else into the test's temp folder)."""
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pbw.app.__main__ as app_main
from pbw import assets
from pbw.app import AppInputError, EditTimeout, Painter, brush_mask, parse_seeds
from pbw.checkpoints import load_generator
from pbw.checkpoints.core import ImportedNetworks, save_pbw_checkpoint
from pbw.models.biggan import BigGANGenerator
from pbw.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from pbw.semantic import SemanticNet, register_model_configs

RES, CANVAS = 32, 384
FAST = dict(optimizer="adam", steps=2, lam=5.0, generations=1)


def tiny_checkpoint(path: Path) -> Path:
    """A pbw checkpoint of a random 32 px StyleGAN2 with its discriminator."""
    torch.manual_seed(0)
    gk = dict(resolution=RES, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
    dk = dict(resolution=RES, channel_base=256, channel_max=16)
    nets = ImportedNetworks("pbw", "stylegan2", gk, {"generator_ema": StyleGAN2Generator(**gk).state_dict()}, dk,
                            StyleGAN2Discriminator(**dk).state_dict())
    save_pbw_checkpoint(nets, path)
    return path


def stroke(y0, y1, x0, x1, size=CANVAS) -> np.ndarray:
    """A brush layer (RGBA, transparent except a painted rectangle) like the page's ImageEditor sends."""
    layer = np.zeros((size, size, 4), np.uint8)
    layer[y0:y1, x0:x1] = (255, 0, 255, 255)
    return layer


@pytest.fixture(scope="module")
def painter(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    register_model_configs()
    g = load_generator(tiny_checkpoint(d / "tiny.ckpt"))
    return Painter(g, SemanticNet("pbw-tiny-clip", None, crops=2), population=4, time_limit=120, out_dir=d / "out")


def test_brush_mask_from_layers():
    assert brush_mask([], RES) is None and brush_mask([np.zeros((CANVAS, CANVAS, 4), np.uint8)], RES) is None
    m = brush_mask([stroke(0, 96, 0, 96), stroke(192, 384, 288, 384)], RES)  # two layers: their union
    assert m.shape == (1, 1, RES, RES)
    assert m[0, 0, :8, :8].eq(1).all() and m[0, 0, 16:, 24:].eq(1).all()
    assert m[0, 0, 12, 12] == 0 and m.sum() == 64 + 16 * 8
    edge = brush_mask([stroke(0, 102, 0, 102)], RES)  # 102 / 12 = 8.5 cells: a soft edge
    assert edge[0, 0, 0, 8].item() == pytest.approx(0.5)
    erased = stroke(0, 96, 0, 96)
    erased[:, :48, 3] = 0  # the eraser clears alpha
    assert brush_mask([erased], RES).sum() == 32
    with pytest.raises(AppInputError, match="RGBA"):
        brush_mask([np.zeros((CANVAS, CANVAS, 3), np.uint8)], RES)


def test_parse_seeds():
    assert parse_seeds("0-3, 7") == [0, 1, 2, 3, 7]
    for bad, msg in (("", "no seeds"), ("a", "not a seed"), ("5-2", "backwards"), ("0-99", "at most")):
        with pytest.raises(AppInputError, match=msg):
            parse_seeds(bad)


def test_samples_are_reproducible(painter):
    a, b = painter.samples("3, 4"), painter.samples("3")
    assert [s.label for s in a] == ["seed 3", "seed 4"] and a[0].image.shape == (1, 3, RES, RES)
    assert torch.equal(a[0].image, b[0].image) and not torch.equal(a[0].image, a[1].image)


def test_bad_input_runs_nothing(painter, monkeypatch):
    from pbw.app.ui import Handlers

    h = Handlers(painter)
    monkeypatch.setattr(painter, "edit", lambda *a, **k: pytest.fail("an edit ran on bad input"))
    start = painter.samples("0")
    args = ("", "adam", 2, 1, 5.0)
    cases = [([], {"layers": [stroke(0, 96, 0, 96)]}, "a red head", False, "pick a starting image"),
             (start, {"layers": []}, "a red head", False, "paint a stroke"),
             (start, None, "a red head", False, "paint a stroke"),
             (start, {"layers": [stroke(0, 96, 0, 96)]}, "  ", False, "prompt is empty"),
             (start, None, "", True, "prompt is empty")]
    for history, editor, prompt, whole, msg in cases:
        out = h.paint(history, editor, prompt, *args, whole, 0)
        assert msg in out[5], (msg, out[5])
    assert "nothing to undo" in h.undo(start)[5]


def test_paint_undo_and_successive_edits(painter):
    from pbw.app.ui import Handlers

    h = Handlers(painter)
    history = painter.samples("1")
    m1 = stroke(0, 192, 0, 192)
    out = h.paint(history, {"layers": [m1]}, "a red head", "blurry", "adam", 2, 1, 5.0, False, 0)
    history = out[0]
    assert len(history) == 2 and out[3] is not None and "Done" in out[5], out[5]
    assert "semantic score" in out[4] and "realism" in out[4] and "preservation" in out[4]
    first = history[1]
    assert set(first.metrics) >= {"semantic_score", "realism", "preservation_l1"}
    assert [Path(f).name for f in out[6]] == ["edited.png", "latents.pt", "comparison.png"]
    assert all(Path(f).is_file() for f in out[6])
    inside = brush_mask([m1], RES).bool().expand(1, 3, RES, RES)
    change = (first.image - history[0].image).abs()
    assert change[inside].mean() > 3 * change[~inside].mean()  # the edit acts in the painted region

    # a second stroke elsewhere: the first edit and everything outside the new stroke stay
    m2 = brush_mask([stroke(256, 384, 256, 384)], RES)
    second = painter.edit(first, m2, "a blue wing", **FAST)
    assert len(second.layers) == 2 and torch.equal(second.w0, first.w0)
    keep = (m2 == 0).expand(1, 3, RES, RES)
    assert torch.equal(second.image[keep], first.image[keep]) and not torch.equal(second.image, first.image)

    # undo walks back through the history
    back = h.undo(history + [second])
    assert len(back[0]) == 2 and back[0][-1] is first

    # the downloaded latents replay the whole history exactly
    replay = painter.load_latents(second.files[1])
    assert len(replay.layers) == 2 and torch.allclose(replay.image, second.image, atol=1e-5)


def test_whole_image_mode(painter):
    start = painter.samples("2")[0]
    nxt = painter.edit(start, None, "a small bird", **FAST)
    assert nxt.layers == [] and not torch.equal(nxt.w0, start.w0) and "preservation_l1" not in nxt.metrics
    assert (nxt.image - start.image).abs().mean() > 1e-4 and "realism" in nxt.metrics
    assert torch.allclose(painter.load_latents(nxt.files[1]).image, nxt.image, atol=1e-5)


def test_saved_latents_are_checked(painter, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a tensor file")
    with pytest.raises(AppInputError, match="is not a saved latent file"):
        painter.load_latents(text)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(AppInputError, match="needs 'codes' and 'w0'"):
        painter.load_latents(tmp_path / "other.pt")
    other = StyleGAN2Generator(RES, z_dim=8, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
    codes = other.sample(1, seed=0)
    torch.save({"codes": codes, "w0": other.encode(codes)}, tmp_path / "foreign.pt")
    with pytest.raises(AppInputError, match="not a latent of this generator"):
        painter.load_latents(tmp_path / "foreign.pt")
    # edit.py's latents.pt (one masked edit, no 'layers') loads as one painted layer
    codes = painter.generator.sample(1, seed=5)
    w0 = painter.generator.encode(codes)
    mask = torch.zeros(1, 1, RES, RES)
    mask[..., :16, :16] = 1
    torch.save({"codes": codes, "w0": w0, "latents": {"w": w0 + 0.5}, "mask": mask}, tmp_path / "edit_py.pt")
    step = painter.load_latents(tmp_path / "edit_py.pt")
    assert len(step.layers) == 1
    assert torch.allclose(step.image, painter.generator.decode(w0 + 0.5, w0, mask), atol=1e-6)


def test_time_limit_stops_an_edit_and_the_page_reports_it(painter, monkeypatch):
    from pbw.app.ui import Handlers

    start = painter.samples("0")[0]
    monkeypatch.setattr(painter, "time_limit", 1e-6)
    with pytest.raises(EditTimeout, match="time limit"):
        painter.edit(start, None, "a bird", **FAST)
    out = Handlers(painter).paint([start], None, "a bird", "", "adam", 2, 1, 5.0, True, 0)
    assert out[5].startswith("**Error:**") and "EditTimeout" in out[5]


def test_cli_defaults_and_missing_mini_checkpoints(tmp_path, monkeypatch):
    args = app_main.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.generator is None
    monkeypatch.setattr(assets, "MINI_DIR", tmp_path)
    with pytest.raises(SystemExit, match="--generator CKPT --clip"):
        app_main.resolve_models(None, None)
    with pytest.raises(SystemExit, match="both --generator and --clip"):
        app_main.resolve_models("g.ckpt", None)
    (tmp_path / assets.GENERATOR_FILES["stylegan2"]).write_bytes(b"x")
    (tmp_path / assets.CLIP_DIR).mkdir()
    for name in assets.CLIP_FILES:
        (tmp_path / assets.CLIP_DIR / name).write_bytes(b"x")
    assert app_main.resolve_models(None, None) == (str(tmp_path / assets.GENERATOR_FILES["stylegan2"]),
                                                   f"local-dir:{tmp_path / assets.CLIP_DIR}")



def test_biggan_class_pick_masked_and_whole_image_edits(tmp_path):
    """Class-conditional generators: samples of a chosen class; a masked edit keeps the class; the
    whole-image mode moves z and the class vector; a masked edit on top of it works; saved latents replay."""
    torch.manual_seed(0)
    g = BigGANGenerator(resolution=32, ch=8, n_classes=3, dim_z=32, shared_dim=8, attention=None).eval()
    p = Painter(g, SemanticNet("pbw-tiny-clip", None, crops=2), population=4, time_limit=120, out_dir=tmp_path)
    assert p.conditional
    starts = p.samples("0-1", class_label=2)
    assert [s.label for s in starts] == ["seed 0, class 2", "seed 1, class 2"]
    assert all(int(s.codes["class"]) == 2 for s in starts)
    with pytest.raises(AppInputError, match="class|label"):
        p.samples("0", class_label=7)
    mask = brush_mask([stroke(0, 192, 0, 192)], RES)
    painted = p.edit(starts[0], mask, "a red roof", **FAST)
    assert len(painted.layers) == 1 and int(painted.codes["class"]) == 2
    assert not torch.equal(painted.image, starts[0].image) and torch.equal(painted.w0, starts[0].w0)
    whole = p.edit(starts[1], None, "a beach", **FAST)
    assert whole.codes["class"].shape == (1, 3) and whole.codes["class"].dtype == torch.float32
    assert not torch.equal(whole.codes["class"], torch.tensor([[0.0, 0.0, 1.0]]))
    assert not torch.equal(whole.codes["z"], starts[1].codes["z"])
    assert torch.allclose(p.load_latents(whole.files[1]).image, whole.image, atol=1e-5)
    on_top = p.edit(whole, mask, "a red roof", **FAST)
    assert torch.equal(on_top.codes["class"], whole.codes["class"]) and len(on_top.layers) == 1
    assert torch.allclose(p.load_latents(on_top.files[1]).image, on_top.image, atol=1e-5)
    assert torch.allclose(p.load_latents(painted.files[1]).image, painted.image, atol=1e-5)

# ---- the page in a browser ------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason=f"no Debian chromium at {CHROMIUM}: run .ci/install_browser.sh "
                                       "(apt-get install chromium chromium-driver) to run the browser test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from pbw.app.__main__ import main

    d = tmp_path_factory.mktemp("app_browser")
    port = _free_port()
    page = main(["--generator", str(tiny_checkpoint(d / "tiny.ckpt")), "--clip", "pbw-tiny-clip:random",
                 "--crops", "2", "--population", "4", "--device", "cpu", "--time_limit", "60",
                 "--port", str(port), "--out", str(d / "out")], block=False)
    yield f"http://127.0.0.1:{port}/", d
    page.close()


@needs_chromium
def test_paint_a_stroke_in_the_browser(server, tmp_path):
    url, folder = server
    sync_api = pytest.importorskip("playwright.sync_api", reason="the python 'playwright' package is not installed")
    shot = Path(os.environ.get("PBW_APP_SCREENSHOT", tmp_path / "app_after_edit.png"))
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(tempfile.mkdtemp(prefix="pbw-chromium-"), executable_path=CHROMIUM,
                                                   headless=True, args=FLAGS, viewport={"width": 1500, "height": 1100})
        try:
            page = ctx.new_page()
            page.goto(url)
            page.fill("#seeds textarea", "0-5")
            page.click("#sample")
            page.get_by_label("Thumbnail 3 of 6").click()
            page.wait_for_function("document.querySelector('#status').innerText.includes('Started from seed 2')",
                                   timeout=30000)

            # Paint with no stroke: a message, nothing runs
            page.click("#paint")
            page.wait_for_function("document.querySelector('#status').innerText.includes('paint a stroke')",
                                   timeout=30000)
            assert page.locator("#result img").count() == 0

            # a brush stroke across the middle of the canvas
            page.locator("#editor").get_by_role("button", name="Brush", exact=True).click()
            box = page.locator("#editor").bounding_box()
            x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4
            page.mouse.move(x, y)
            page.mouse.down()
            for i in range(1, 13):
                page.mouse.move(x + i * box["width"] * 0.03, y + i * 4)
            page.mouse.up()

            page.fill("#prompt textarea", "a red head")
            page.fill("#steps input[type=number]", "2")
            page.press("#steps input[type=number]", "Enter")
            start = time.monotonic()
            page.click("#paint")
            page.wait_for_function("document.querySelector('#metrics').innerText.includes('semantic score')",
                                   timeout=180000)
            elapsed = time.monotonic() - start
            page.wait_for_selector("#result img", timeout=10000)
            status, metrics = page.locator("#status").inner_text(), page.locator("#metrics").inner_text()
            assert "Done: painted: a red head" in status, status
            for figure in ("semantic score", "realism", "preservation: L1"):
                assert figure in metrics
            assert page.locator("#original img").count() == 1
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            page.locator("#files a[href$='latents.pt']").wait_for(timeout=10000)
            assert page.locator("#files a[href$='edited.png']").count() == 1
            assert shot.stat().st_size > 10_000
            print(f"edit in the browser: {elapsed:.1f} s")

            # undo goes back to the start
            page.click("#undo")
            page.wait_for_function("document.querySelector('#status').innerText.includes('Undone')", timeout=30000)

            # uploads: a file that is not a latent gets a message; the saved latents come back
            bad = tmp_path / "notes.pt"
            bad.write_text("not a latent")
            page.set_input_files("#upload input[type=file]", str(bad))
            page.wait_for_function("document.querySelector('#status').innerText.includes('not a saved latent')",
                                   timeout=30000)
            page.locator("#upload").get_by_role("button", name="Clear").click()
            page.set_input_files("#upload input[type=file]", str(folder / "out" / "edit_0001" / "latents.pt"))
            page.wait_for_function("document.querySelector('#status').innerText.includes('1 painted layer')",
                                   timeout=30000)
        finally:
            ctx.close()
