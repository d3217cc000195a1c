"""End to end: the real page in headless Debian Chromium, driven by Playwright (no browser download).

Loads the page, samples, picks an image, paints a stroke on the canvas, types words, presses Paint,
and checks that an edited image and the metrics appear. The screenshot after the edit is written to
$PBW_APP_SCREENSHOT when set (else into the test's temp folder)."""
import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from test_app import tiny_checkpoint  # tests/ is on sys.path (rootdir import mode)

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
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
