"""scripts/reproduce_paper.sh: every paper experiment runs end to end at toy sizes on the CPU and is timed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    return subprocess.run(
        ["bash", str(ROOT / "scripts/reproduce_paper.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_dry_run_times_every_experiment(tmp_path):
    run = _run("--dry-run", "--out", str(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith(("cub_", "bedroom", "places"))]
    experiments = {"cub_text_to_image": 2, "bedroom": 2, "places": 2}  # two variants each
    for name, variants in experiments.items():
        timed = [r for r in rows if r[0] == name]
        assert len(timed) == variants and all(float(r[-2]) > 0 for r in timed), run.stdout
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert all(row["n"] >= 1 for task in results["tasks"].values() for row in task["rows"].values())
    assert "random weights (toy)" in run.stdout


def test_a_missing_weights_folder_is_one_line_and_exit_2(tmp_path):
    run = _run(str(tmp_path / "nowhere"), timeout=120)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "not a folder" in run.stderr
