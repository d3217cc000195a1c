"""Smoke test of benchmarks/ops.py on a tiny StyleGAN2 (on the CPU it measures the reference only)."""

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_ops_benchmark_runs_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pbw_bench_ops", ROOT / "benchmarks" / "ops.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "ops.json"
    report = bench.main(
        [
            "--device",
            "cpu",
            "--resolution",
            "32",
            "--batch",
            "2",
            "--channel-base",
            "128",
            "--channel-max",
            "8",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--no-compile",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert "CUDA is unavailable" in report["cuda_ops"] and "CUDA is unavailable" in capsys.readouterr().out
    names = [op["name"] for op in report["ops"]]
    assert "upfirdn2d upconv-FIR 32px" in names and "bias_act lrelu 4px" in names and len(names) == len(set(names))
    for op in report["ops"]:
        assert op["ref"]["time_ms"] > 0 and "cuda" not in op and "ref_compiled" not in op
        assert op["shape"][0] == 2
    step = report["train_step"]
    assert step["ref"]["time_ms"] > 0 and step["resolution"] == 32
    assert torch.is_grad_enabled()
