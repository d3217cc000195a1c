"""The training-step benchmark runs for both families and reports positive timings."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_step  # noqa: E402


@pytest.mark.parametrize(
    "family,extra", [("stylegan2", ["--channel-base", "256", "--channel-max", "16"]), ("biggan", ["--ch", "4"])]
)
def test_train_step_benchmark_reports_both_precisions(family, extra, capsys):
    report = train_step.main(
        [
            "--family",
            family,
            "--resolution",
            "32",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            *extra,
        ]
    )
    assert '"results"' in capsys.readouterr().out
    assert [r["precision"] for r in report["results"]] == ["fp32", "bf16"]
    for r in report["results"]:
        assert r["fwd_bwd_s"] > 0 and r["iteration_s"] > 0 and r["iteration_cpu_s"] > 0
    assert report["bf16_speedup_iteration"] > 0
