"""Labelled pictures: crisp whole-factor upscaling, an edit's comparison.png and the miniature's grid
(`python -m pbw.reproduce grid`)."""

import numpy as np
import pytest
import torch
from PIL import Image

from pbw.assets import mini_generator_path
from pbw.checkpoints import load_generator
from pbw.editing.figures import BACKGROUND, comparison_image, to_pil, upscale, upscale_factor
from pbw.editing.result import EditResult, to01
from pbw.reproduce import main

RES = 32
COLORS = [[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 0)]]


def find_panel(picture: np.ndarray, native: np.ndarray, k: int) -> tuple[int, int] | None:
    """The top-left corner (x, y) where `native` ([H, W, 3] uint8), each pixel a k x k block, lies in `picture`."""
    block = np.kron(native, np.ones((k, k, 1), np.uint8))
    h, w = block.shape[:2]
    for y, x in zip(*np.nonzero((picture == block[0, 0]).all(-1)), strict=True):
        if np.array_equal(picture[y : y + h, x : x + w], block):
            return int(x), int(y)
    return None


def _result(masked: bool, prompt: dict | None = None) -> EditResult:
    torch.manual_seed(0)
    x = torch.rand(1, 3, RES, RES) * 2 - 1
    mask = torch.zeros(1, 1, RES, RES)
    mask[..., 8:24, 8:24] = 1
    return EditResult(
        codes={"z": torch.zeros(1, 4)},
        w0=torch.zeros(1, 4),
        original=x,
        edited=x.flip(-1),
        mask=mask if masked else None,
        prompt=prompt,
    )


def test_upscale_factor_is_the_smallest_that_reaches_the_side():
    assert [upscale_factor(s, 256) for s in (32, 30, 256, 300, 2)] == [8, 9, 1, 1, 128]


def test_a_2x2_image_upscaled_by_k_is_k_by_k_blocks():
    image = torch.tensor(COLORS, dtype=torch.float32).permute(2, 0, 1) / 255
    big = np.asarray(upscale(to_pil(image), 3))
    assert big.shape == (6, 6, 3)
    for i in range(2):
        for j in range(2):
            assert (big[3 * i : 3 * i + 3, 3 * j : 3 * j + 3] == COLORS[i][j]).all()
    # in a comparison each color is one 128 x 128 block (2 px -> at least 256 px), with labels above
    picture = np.asarray(comparison_image([("original", image)]))
    tops = []
    for color in (c for row in COLORS for c in row):
        ys, xs = np.nonzero((picture == color).all(-1))
        assert len(ys) == 128 * 128 and np.ptp(ys) == np.ptp(xs) == 127
        tops.append(ys.min())
    assert min(tops) > 0 and (picture[: min(tops)] != BACKGROUND).any()  # the label's ink


def test_comparison_png_labels_upscaled_panels_and_keeps_the_data_native(tmp_path):
    files = _result(masked=True, prompt={"texts": ["a bird with a red body"], "weights": [1.0]}).save(tmp_path / "m")
    assert Image.open(files["original"]).size == Image.open(files["mask"]).size == (RES, RES)
    picture = np.asarray(Image.open(files["comparison"]).convert("RGB"))
    k = 8  # 32 px -> 256 px
    original, edited = (np.asarray(Image.open(files[n]).convert("RGB")) for n in ("original", "edited"))
    (x0, y0), (x1, y1) = find_panel(picture, original, k), find_panel(picture, edited, k)
    assert y0 == y1 > 0 and x1 - x0 >= 2 * 256  # the mask overlay between them; label rows above
    assert picture.shape[0] > y0 + 256  # the caption below
    assert (picture[:y0] != BACKGROUND).any() and (picture[y0 + 256 :] != BACKGROUND).any()
    plain = np.asarray(_result(masked=False).comparison())  # no mask, no prompt: two panels, no caption
    (x0, y0), (x1, _) = find_panel(plain, original, k), find_panel(plain, edited, k)
    assert x1 - x0 < 2 * 256 and 2 * 256 < plain.shape[1] < 3 * 256 and plain.shape[0] < y0 + 256 + 20


def test_grid_of_both_bundled_generators(tmp_path, capsys):
    out = tmp_path / "grid.png"
    main(
        [
            "grid",
            "--out",
            str(out),
            "--seeds",
            "0",
            "--colors",
            "red",
            "--steps",
            "1",
            "--generations",
            "1",
            "--population",
            "2",
        ]
    )
    picture = np.asarray(Image.open(out).convert("RGB"))
    g = load_generator(mini_generator_path())
    codes = g.sample(1, seed=0)
    with torch.no_grad():
        original = np.asarray(to_pil(to01(g.decode(g.encode(codes), cond=codes))))
    x, y = find_panel(picture, original, 128 // g.resolution)  # each panel 128 px
    assert x > 20 and y > 20  # the row label on the left, the title and column labels above
    assert (picture[y : y + 128, :x] != BACKGROUND).any() and (picture[:y, x : x + 128] != BACKGROUND).any()
    assert picture.shape[1] >= x + 2 * 128 and picture.shape[0] >= 2 * (y + 128)  # original | red, two blocks
    assert "StyleGAN2: 1 edits" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "3-1"], "not a range"),
        (["--seeds", "a"], "whole numbers"),
        (["--colors", "red,"], "color names"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_grid_input_errors_are_one_line_and_status_2(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["grid", *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and message in err and "\n" not in err
