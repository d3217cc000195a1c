"""benchmarks/gpu_check.py (scripts/gpu_check.sh): the dry run walks every step of the GPU check on the
CPU at toy sizes and writes the report; its pieces (timeouts, test counts, findings, the wheel
closure) on fakes. Nothing here downloads anything."""

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pbw_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gpu_check  # its dataclasses look their module up
_spec.loader.exec_module(gpu_check)
_spec = importlib.util.spec_from_file_location("pbw_offline_wheels", ROOT / "benchmarks" / "offline_wheels.py")
offline_wheels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(offline_wheels)


def _run_script(tmp_path, *args, timeout=300):
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(out), "--workdir", str(tmp_path / "work"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return run, out, time.perf_counter() - start


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    run, out, seconds = _run_script(tmp_path_factory.mktemp("gpu_check"), "--dry-run")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"dry run: {seconds:.1f} s")
    return run, json.loads(out.read_text()), out


def test_dry_run_walks_every_step(dry_run):
    run, report, out = dry_run
    assert report["mode"].startswith("dry-run") and report["torch"] and report["total_s"] > 0
    steps = {s["name"]: s for s in report["steps"]}
    # the key figures first (training step, edit), then the tests and op benchmarks, compiling last
    order = ["env", "build", "train_step", "train_step_auto", "edit", "gpu_tests", "ops", "ddp", "compiled"]
    assert [s["name"] for s in report["steps"]] == gpu_check.STEP_NAMES == order
    progress = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("[")]
    assert progress == order  # one line per step, as its JSON was written
    for s in report["steps"]:
        assert s["status"] in ("ok", "skipped"), s
        if s["status"] == "skipped":
            assert s["reason"], s
        else:
            assert s["result"], s
    # steps that need a GPU say why they skipped; the gpu tests were collected and skipped by pytest
    assert "dry run" in steps["build"]["reason"]
    tests = steps["gpu_tests"]
    assert tests["status"] == "skipped" and "CUDA" in tests["reason"] and tests["returncode"] == 0
    assert tests["result"]["tests"] > 0 and tests["result"]["skipped"] == tests["result"]["tests"]
    assert "tests/test_cuda_ops_gpu.py" in tests["result"]["files"]
    assert "needs 2" in steps["ddp"]["reason"]
    assert steps["env"]["result"]["import_open_clip"] == "found"
    # the benchmarks ran at toy sizes
    assert steps["ops"]["result"]["n_ops"] > 0 and "unavailable" in steps["ops"]["result"]["cuda_ops"]
    train = steps["train_step"]["result"]
    assert train["precision"] == "bf16-mixed" and train["r1_interval"] == 16 and train["complete"]
    assert train["results"][0]["s_per_kimg"] > 0 and train["results"][0]["weights_finite"]
    assert train["label"] == "config-f" and steps["train_step_auto"]["result"]["label"].startswith("NVIDIA")
    assert steps["train_step_auto"]["result"]["nvidia_v100_s_per_kimg"] == gpu_check.NVIDIA_V100_S_PER_KIMG
    edit = steps["edit"]["result"]
    assert edit["clip"] == "pbw-tiny-clip:random" and edit["population"] == 4
    for key in (
        "s_per_generation_batched",
        "s_per_generation_loop",
        "s_per_edit_measured",
        "batch2_s_per_edit_measured",
        "batch2_s_per_request",
    ):
        assert edit[key] > 0, key
    assert edit["complete"] and edit["batch2_population_chunk"] == 4
    assert steps["compiled"]["result"]["ref"]["time_ms"] > 0
    assert report["findings"] == []
    # the table and the log
    assert "| step" in run.stdout and all(name in run.stdout for name in gpu_check.STEP_NAMES)
    log = out.with_suffix(".log").read_text()
    assert "===== edit: ok" in log and "benchmarks/edit.py" in log


def test_usage_says_how_to_run_it_and_prepare_wheels(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--help"])
    text = capsys.readouterr().out
    for needle in ("--dry-run", "--prepare", "offline_wheels.py", "--out gpu_check.json", "--steps"):
        assert needle in text, needle
    assert gpu_check.BUDGET_S < 8 * 60
    wheels = (ROOT / "benchmarks" / "offline_wheels.py").read_text()
    assert "GPU machine without internet" in wheels and "--target /tmp/site" in offline_wheels.INSTALL_COMMAND
    assert ".whl/" in (ROOT / ".gitignore").read_text().split()


def test_a_step_past_its_timeout_is_killed_with_its_children(tmp_path):
    code = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('started', flush=True); time.sleep(60)"
    )
    rc, seconds = gpu_check.run_command([sys.executable, "-c", code], dict(os.environ), 2, tmp_path / "log")
    assert rc is None and seconds < 20
    assert "started" in (tmp_path / "log").read_text()


def _junit(tmp_path, cases):
    body = "".join(f'<testcase classname="t" name="{n}">{x}</testcase>' for n, x in cases)
    skipped = sum("skipped" in x for _, x in cases)
    failures = sum("failure" in x for _, x in cases)
    xml = (
        f'<testsuites><testsuite tests="{len(cases)}" failures="{failures}" errors="0" skipped="{skipped}">'
        f"{body}</testsuite></testsuites>"
    )
    path = tmp_path / "t.xml"
    path.write_text(xml)
    return path


def test_gpu_test_counts_failures_and_all_skipped(tmp_path):
    ctx = gpu_check.Context(False, tmp_path, 1, False)
    status, text, result = gpu_check.sum_gpu_tests(
        ctx,
        _junit(
            tmp_path,
            [
                ("a", ""),
                ("b", '<failure message="AssertionError: not close&#10;more">x</failure>'),
                ("c", '<skipped message="needs a CUDA device"/>'),
            ],
        ),
    )
    assert status == "failed" and result["passed"] == 1 and "1 failed" in text
    assert result["failed_tests"] == ["t::b: AssertionError: not close"]
    status, text, _ = gpu_check.sum_gpu_tests(
        ctx, _junit(tmp_path, [("c", '<skipped message="needs a CUDA device"/>')])
    )
    assert status == "skipped" and "needs a CUDA device" in text


def test_findings_name_slow_ops_and_a_small_training_gain():
    steps = [
        {"name": "ops", "status": "ok", "result": {"ops_slower_than_ref": {"bias_act lrelu 4px": 0.8}}},
        {"name": "train_step", "status": "ok", "result": {"fused_speedup": 1.1}},
        {"name": "edit", "status": "timeout", "reason": "killed after its 150 s timeout"},
    ]
    found = gpu_check.findings(steps)
    assert len(found) == 3 and "bias_act lrelu 4px" in found[0] and "1.1x" in found[1] and "edit: timeout" in found[2]


def _fake_wheel(dest: Path, name: str, version: str, requires: list[str]) -> None:
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    with zipfile.ZipFile(dest / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)


def test_wheel_closure_skips_what_the_device_has(tmp_path, monkeypatch):
    index = {
        "open_clip_torch": ["torch>=2.0", "ftfy", "timm>=1.0"],
        "ftfy": ["wcwidth"],
        "wcwidth": [],
        "colorama_win": [],
        "extra_only": [],
    }
    index["open_clip_torch"] += ['colorama_win; sys_platform == "win32"', 'extra_only; extra == "training"']
    calls = []

    def fake_download(specs, dest):
        calls.append(list(specs))
        for spec in specs:
            name = spec.split("=")[0].split(">")[0].split("<")[0]
            _fake_wheel(dest, name, "1.0", index[name])

    monkeypatch.setattr(offline_wheels, "_pip_download", fake_download)
    wheels = offline_wheels.download_closure(["open_clip_torch==3.3.0"], tmp_path, {})
    assert sorted(w.name.split("-")[0] for w in wheels) == ["ftfy", "open_clip_torch", "wcwidth"]
    assert calls == [["open_clip_torch==3.3.0"], ["ftfy"], ["wcwidth"]]  # torch and timm are on the device


@pytest.mark.slow
def test_dry_run_ddp_on_two_cpu_processes(tmp_path):
    run, out, _ = _run_script(tmp_path, "--dry-run", "--steps", "ddp", "--ddp-cpu")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ddp = {s["name"]: s for s in json.loads(out.read_text())["steps"]}["ddp"]
    assert ddp["status"] == "ok", ddp
    result = ddp["result"]["results"][0]
    assert result["world_size"] == 2 and result["ranks_equal"] and result["weights_finite"]


def test_failed_build_and_timeout_are_recorded_and_the_check_goes_on(tmp_path, monkeypatch, capsys):
    partial = {
        "device": "cpu",
        "cuda_ops": "available",
        "ops": [
            {
                "name": "bias_act lrelu 4px",
                "cuda": {"time_ms": 2.0},
                "ref": {"time_ms": 1.0},
                "ratios": {"ref/cuda time": 0.5},
            }
        ],
        "train_step": None,
        "complete": False,
    }
    slow = "import sys, time; open(sys.argv[1], 'w').write(sys.argv[2]); time.sleep(60)"
    steps = [
        gpu_check.Step(
            "build",
            "fails",
            30,
            1,
            lambda ctx: [sys.executable, "-c", "raise SystemExit('no nvcc')"],
            gpu_check.sum_build,
        ),
        gpu_check.Step(
            "gpu_tests",
            "skipped after the failed build",
            30,
            1,
            gpu_check.cmd_gpu_tests,
            gpu_check.sum_gpu_tests,
            "gpu_tests.xml",
        ),
        gpu_check.Step(
            "ops",
            "times out with partial results",
            3,
            1,
            lambda ctx: [sys.executable, "-c", slow, ctx.path("ops.json"), json.dumps(partial)],
            gpu_check.sum_ops,
            "ops.json",
        ),
    ]
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    out = tmp_path / "r.json"
    on_disk = []  # the report as it is on disk after each step
    add = gpu_check.Report.add

    def add_and_read(self, entry, log_text=""):
        add(self, entry, log_text)
        on_disk.append([s["name"] for s in json.loads(out.read_text())["steps"]])

    monkeypatch.setattr(gpu_check.Report, "add", add_and_read)
    rc = gpu_check.main(
        ["--dry-run", "--out", str(out), "--workdir", str(tmp_path / "w"), "--steps", "build,gpu_tests,ops"]
    )
    report = json.loads(out.read_text())
    by = {s["name"]: s for s in report["steps"]}
    assert rc == 1 and [s["name"] for s in report["steps"]] == ["env", "build", "gpu_tests", "ops"]
    assert on_disk == [["env"], ["env", "build"], ["env", "build", "gpu_tests"], ["env", "build", "gpu_tests", "ops"]]
    assert by["build"]["status"] == "failed" and "no nvcc" in by["build"]["log_tail"]
    assert by["gpu_tests"]["status"] == "skipped" and "did not build" in by["gpu_tests"]["reason"]
    assert by["ops"]["status"] == "timeout" and "partial" in by["ops"]["summary"]
    assert by["ops"]["result"]["ops_slower_than_ref"] == {"bias_act lrelu 4px": 0.5}
    assert any("slower than the reference" in f for f in report["findings"])
    cmd = gpu_check.cmd_train_step(gpu_check.Context(False, tmp_path, 1, False, build_failed="build failed"))
    assert cmd[cmd.index("--cuda-ops") + 1] == "ref"  # the later steps measure the reference only
    assert "| ops" in capsys.readouterr().out
