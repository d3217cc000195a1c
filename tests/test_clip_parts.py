"""pbw.evaluation.clip_parts: a CLIP's zero-shot part-color accuracy through the editor's view."""

import json

import pytest
import torch

from pbw.assets import mini_clip_spec
from pbw.data.synthetic import COLOR_NAMES
from pbw.evaluation.clip_parts import VIEWS, candidates, catalog, main, markdown, part_color_accuracy, ranks_first


def test_candidates_put_the_true_color_first_and_name_every_color_once():
    for true in range(len(COLOR_NAMES)):
        cand = candidates(true)
        assert cand[0] == true and sorted(cand) == list(range(len(COLOR_NAMES)))
    prompts = catalog("wing")
    assert [p.texts for p in prompts] == [[f"a bird with a {c} wings"] for c in COLOR_NAMES]
    assert prompts[candidates(COLOR_NAMES.index("red"))[0]].texts == ["a bird with a red wings"]


def test_a_hit_is_the_true_color_strictly_first():
    scores = torch.zeros(3, len(COLOR_NAMES))
    scores[0, 4] = 1.0  # true color 4 on top: hit
    scores[1, 2] = 1.0  # color 2 on top, true color 4: miss
    scores[2, [4, 5]] = 1.0  # a tie is not a hit
    assert ranks_first(scores, torch.tensor([4, 4, 4])) == [True, False, False]


def test_report_on_a_few_held_out_birds(tmp_path, capsys):
    report = part_color_accuracy(mini_clip_spec(), n=6, parts=("body", "tail"), crops=2)
    assert set(report["views"]) == set(VIEWS) and report["chance"] == pytest.approx(1 / len(COLOR_NAMES))
    for view in VIEWS:
        assert set(report["views"][view]) == {"body", "tail"}
        for e in report["views"][view].values():
            assert 1 <= e["n"] <= 6 and 0 <= e["ci95"][0] <= e["value"] <= e["ci95"][1] <= 1
    assert markdown(report).count("\n") == 2 + 2  # header, rule, two parts, chance
    out = tmp_path / "r.json"
    main(["--n", "4", "--parts", "head", "--crops", "0", "--json", str(out)])
    assert set(json.loads(out.read_text())["views"]) == {"masked", "whole"}
    assert "| head | 4 |" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--parts", "legs"], ["--n", "0"], ["--clip", "local-dir:/nonexistent"]])
def test_bad_input_is_one_line_and_exit_2(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
