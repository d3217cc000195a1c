"""One GPU check: every GPU-only part of pbw in one command, under 8 minutes on one H100/H200, the key
figures first (a check cut short still yields them).

Steps (each in its own process, with its own timeout; a failing step is recorded and the next runs):
  env             GPU, driver, torch/CUDA/cuDNN/nvcc versions, open_clip and wandb
  build           the fused CUDA ops' JIT build (python -m cuda_ops.build); later steps reuse it
  train_step      benchmarks/train_step.py --lightning: the 256 px StyleGAN2 training iteration of
                  stylegan2/cub256.yaml (config-f, batch 64, bf16-mixed), fused vs reference
                  kernels, with ADA's p started at 0.2 (R1 goes through the augmentation) and the lazy R1
                  and path-length steps inside the timed window: s/kimg, peak memory, host syncs per step
  train_step_auto the same with NVIDIA's `--cfg=auto` networks at 256 px (half width, batch 16), the
                  setting of their expected 21.6-24.2 s/kimg on one V100: the like-for-like comparison
  edit            benchmarks/edit.py: a paper-setting edit (256 px StyleGAN2 and ViT-B-32, random
                  weights; 20 x 50 CMA-ES + 100 Adam, 32 crops), then a batch of 8 requests (population
                  split so that one pass holds at most 200 images), peak memory; its JSON is rewritten
                  after every measurement
  gpu_tests       the `gpu`-marked tests: kernels vs reference (fwd, bwd, double bwd, fp32/fp16/bf16,
                  contiguous/channels_last, the 256 px shapes)
  ops             benchmarks/ops.py in bf16 (as training runs): each op of a 256 px config-f G and D,
                  fused vs `auto` vs reference, time and peak memory
  ddp             a 2-GPU DDP smoke test of the trainer (NCCL; ranks must end equal); skipped with
                  fewer than 2 GPUs
  compiled        benchmarks/ops.py's whole 256 px G+D step (with R1), fused vs reference vs
                  torch.compile'd reference (last: compiling is the slowest part)
It writes one JSON report (rewritten after every step, so a killed run still leaves one) and a log
with every step's output beside it, and prints a short table.

    bash scripts/gpu_check.sh --out gpu_check.json            # on the GPU machine
    bash scripts/gpu_check.sh --steps build,train_step        # some steps only (keep build first)
    bash scripts/gpu_check.sh --dry-run --out /tmp/check.json # toy sizes on the CPU (CI)

The check caps itself at {BUDGET_S} s (--budget; each step also has its own timeout, and later steps
keep a reserve). A GPU machine without internet lacks open_clip and wandb: `bash scripts/gpu_check.sh
--prepare` (benchmarks/offline_wheels.py), run where pip works, downloads them as wheels into .whl/
and prints how to install them there. Without CUDA, `--dry-run` walks the same steps at toy sizes on
the CPU (32 px narrow StyleGAN2, the tiny CLIP, a few generations/steps; no torch.compile); steps
that need a GPU say why they skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 470  # the whole check, JIT build included: < 8 minutes
NVIDIA_V100_S_PER_KIMG = "21.6-24.2"  # stylegan2-ada-pytorch's expected training time, --cfg=auto, 256 px, one V100


# ------------------------------------------------------------------------------------------ steps
@dataclass
class Step:
    """A step of the check: `command(ctx)` gives argv (or a str: the reason it is skipped);
    `summarize(ctx, result)` turns its JSON (or junit XML) into (status, summary, result)."""

    name: str
    what: str
    max_s: float  # its own timeout
    reserve_s: float  # kept free for it while earlier steps run
    command: Callable[[Context], list[str] | str]
    summarize: Callable[[Context, Path], tuple[str, str, dict]] | None = None
    result_file: str | None = None


@dataclass
class Context:
    dry_run: bool
    workdir: Path
    gpus: int
    ddp_cpu: bool
    env: dict = field(default_factory=dict)
    build_failed: str | None = None  # then the later steps measure the reference ops only (PBW_CUDA_OPS=ref)

    @property
    def py(self) -> str:
        return sys.executable

    def path(self, name: str) -> str:
        return str(self.workdir / name)


def _no_gpu_reason(ctx: Context) -> str | None:
    return None if ctx.gpus else "dry run on the CPU: the fused ops are only built where a GPU is"


def cmd_build(ctx: Context):
    return _no_gpu_reason(ctx) or [ctx.py, "-m", "cuda_ops.build"]


def gpu_test_files() -> list[str]:
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if re.search(r"pytest\.mark\.gpu\b", p.read_text())
    )


def cmd_gpu_tests(ctx: Context):
    if ctx.build_failed:
        return f"the fused ops did not build ({ctx.build_failed}): nothing to test"
    # 4 processes (pytest-xdist, on the device image): one process took > 165 s for the 202 tests on an H200
    parallel = ["-n", "4"] if importlib.util.find_spec("xdist") and not ctx.dry_run else []
    return [
        ctx.py,
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        *parallel,
        "--junitxml",
        ctx.path("gpu_tests.xml"),
        *gpu_test_files(),
    ]


def toy_ops_args(resolution: int) -> list[str]:
    """benchmarks/ops.py at toy sizes on the CPU, for --dry-run."""
    toy = f"--device cpu --resolution {resolution} --batch 2 --channel-base 64 --channel-max 8 --iters 1 --warmup 0"
    return [*toy.split(), "--no-compile"]


def cmd_ops(ctx: Context):
    base = [ctx.py, "benchmarks/ops.py", "--json", ctx.path("ops.json"), "--no-train-step"]
    if ctx.dry_run:
        return base + toy_ops_args(16)
    return base + ["--iters", "10", "--warmup", "3", "--dtype", "bfloat16", "--no-compile"]


def cmd_ops_train_step(ctx: Context):
    base = [ctx.py, "benchmarks/ops.py", "--json", ctx.path("ops_train_step.json"), "--no-ops"]
    if ctx.dry_run:
        return base + toy_ops_args(32)
    return base + ["--iters", "8", "--warmup", "2"]


TOY_SG2 = ["--resolution", "32", "--channel-base", "256", "--channel-max", "16"]


def cmd_train_step(ctx: Context, network: str = "config", result: str = "train_step.json"):
    base = [
        ctx.py,
        "benchmarks/train_step.py",
        "--lightning",
        "stylegan2/cub256.yaml",
        "--network",
        network,
        "--augment-p",
        "0.2",
        "--json",
        ctx.path(result),
    ]
    if ctx.dry_run:
        return (
            base
            + TOY_SG2
            + ["--batch", "2", "--steps", "2", "--warmup", "1", "--accelerator", "cpu", "--cuda-ops", "auto"]
        )
    return base + ["--cuda-ops", "ref" if ctx.build_failed else "cuda,ref", "--steps", "16", "--warmup", "4"]


def cmd_train_step_auto(ctx: Context):
    return cmd_train_step(ctx, "nvidia-auto", "train_step_auto.json")


def cmd_edit(ctx: Context):
    base = [ctx.py, "benchmarks/edit.py", "--json", ctx.path("edit.json"), "--requests", "8", "--full"]
    if ctx.dry_run:
        return base[:-3] + [
            "--requests",
            "2",
            "--full",
            "--device",
            "cpu",
            "--resolution",
            "32",
            "--channel_base",
            "256",
            "--channel_max",
            "16",
            "--clip",
            "pbw-tiny-clip:random",
            "--crops",
            "2",
            "--population",
            "4",
            "--paper_generations",
            "2",
            "--paper_steps",
            "2",
            "--generations",
            "2",
            "--adam_steps",
            "2",
        ]
    return base + ["--device", "cuda", "--clip", "ViT-B-32:random"]


def cmd_ddp(ctx: Context):
    base = [
        ctx.py,
        "benchmarks/train_step.py",
        "--lightning",
        "stylegan2/cub256.yaml",
        "--json",
        ctx.path("ddp.json"),
        "--devices",
        "2",
        "--cuda-ops",
        "auto",
    ]
    if ctx.dry_run and ctx.ddp_cpu:
        return base + TOY_SG2 + ["--batch", "2", "--steps", "2", "--warmup", "1", "--accelerator", "cpu"]
    if ctx.gpus < 2:
        return f"the machine has {ctx.gpus} GPU{'s' if ctx.gpus != 1 else ''}; the DDP smoke test needs 2" + (
            " (--ddp-cpu runs it on 2 CPU processes)" if ctx.dry_run else ""
        )
    return base + ["--batch", "16", "--steps", "8", "--warmup", "2", "--accelerator", "gpu"]


# ------------------------------------------------------------------------------------ summaries
def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def sum_build(ctx, path):
    return "ok", "fused ops built", {}


def sum_gpu_tests(ctx, path: Path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed, skip_reasons = [], set()
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                msg = (node.get("message") or "").strip().splitlines()
                failed.append(f"{case.get('classname')}::{case.get('name')}: {msg[0][:200] if msg else tag}")
        node = case.find("skipped")
        if node is not None:
            skip_reasons.add((node.get("message") or "skipped").strip()[:200])
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    result = {
        "files": gpu_test_files(),
        "passed": passed,
        **counts,
        "failed_tests": failed[:30],
        "skip_reasons": sorted(skip_reasons)[:5],
    }
    text = (
        f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped "
        f"of {counts['tests']}"
    )
    if counts["failures"] or counts["errors"]:
        return "failed", text, result
    if counts["tests"] and counts["skipped"] == counts["tests"]:
        return "skipped", f"all {counts['tests']} skipped: {'; '.join(sorted(skip_reasons))[:200]}", result
    return "ok", text, result


def _geo(values: list[float]) -> float | None:
    return round(math.exp(sum(math.log(v) for v in values) / len(values)), 3) if values else None


def sum_ops(ctx, path: Path):
    rep = _json(path)
    fused = {o["name"]: o["ratios"]["ref/cuda time"] for o in rep["ops"] if "ref/cuda time" in o.get("ratios", {})}
    auto = {o["name"]: o["ratios"]["ref/auto time"] for o in rep["ops"] if "ref/auto time" in o.get("ratios", {})}
    compiled = {
        o["name"]: o["ratios"]["ref_compiled/cuda time"]
        for o in rep["ops"]
        if "ref_compiled/cuda time" in o.get("ratios", {})
    }
    errors = {
        o["name"]: {k: v for k, v in o.items() if k.endswith("error")}
        for o in rep["ops"]
        if any(k.endswith("error") for k in o)
    }
    result = {
        "device": rep["device"],
        "cuda_ops": rep["cuda_ops"],
        "n_ops": len(rep["ops"]),
        "geomean_ref_over_fused": _geo(list(fused.values())),
        "geomean_compiled_over_fused": _geo(list(compiled.values())),
        "ops_slower_than_ref": {k: v for k, v in fused.items() if v < 1},
        "geomean_ref_over_auto": _geo(list(auto.values())),
        "auto_slower_than_ref": {k: v for k, v in auto.items() if v < 0.95},  # beyond 5%: re-measure the dispatch
        "ops_slower_than_compiled_ref": {k: v for k, v in compiled.items() if v < 1},
        "errors": errors,
        "ops": rep["ops"],
    }
    if not fused:
        return "ok", f"{len(rep['ops'])} ops, reference only ({rep['cuda_ops'][:60]})", result
    text = f"fused vs ref {result['geomean_ref_over_fused']}x (geomean, slowest {min(fused.values())}x)" + (
        f", vs compiled {result['geomean_compiled_over_fused']}x" if compiled else ""
    )
    if auto:
        text += f"; auto vs ref {result['geomean_ref_over_auto']}x (slowest {min(auto.values())}x)"
    return ("ok" if not errors else "failed"), text, result


def sum_ops_train_step(ctx, path: Path):
    step = _json(path)["train_step"] or {}
    result = dict(step)
    times = {k: step[k]["time_ms"] for k in ("cuda", "ref", "ref_compiled") if step.get(k)}
    errors = {k: v for k, v in step.items() if k.endswith("error")}
    text = ", ".join(f"{k} {v:.1f} ms" for k, v in times.items())
    if step.get("ratios"):
        text += "; " + ", ".join(f"{k} {v}" for k, v in step["ratios"].items() if "time" in k)
    return ("failed" if errors or not times else "ok"), text or "no timings", result


def sum_train_step(ctx, path: Path):
    rep = _json(path)
    by_mode = {r["cuda_ops"]: r for r in rep["results"]}
    auto = rep.get("network") == "nvidia-auto"
    label = "NVIDIA --cfg=auto networks" if auto else "config-f"
    result = {**rep, "label": label} | ({"nvidia_v100_s_per_kimg": NVIDIA_V100_S_PER_KIMG} if auto else {})

    def one(m, r):
        if "error" in r:
            return f"{m} FAILED"
        extra = [f"{r['peak_gpu_memory_gib']} GiB"] if "peak_gpu_memory_gib" in r else []
        extra += [f"{r['host_syncs_per_step']} syncs/step"] if "host_syncs_per_step" in r else []
        return f"{m} {r['s_per_kimg']} s/kimg" + (f" ({', '.join(extra)})" if extra else "")

    text = f"{label}: " + ", ".join(one(m, r) for m, r in by_mode.items())
    if "fused_speedup" in rep:
        text += f"; fused {rep['fused_speedup']}x"
    text += f" (batch {rep['batch_per_device']}, {rep['precision']}"
    text += f"; NVIDIA on one V100: {NVIDIA_V100_S_PER_KIMG} s/kimg)" if auto else ")"
    bad = [
        f"{m}: {r['error'][:150]}" if "error" in r else f"{m}: non-finite weights"
        for m, r in by_mode.items()
        if "error" in r or not r["weights_finite"]
    ]
    if not ctx.dry_run and "cuda" in by_mode and not by_mode["cuda"].get("fused_kernels_used", True):
        bad.append("fused kernels not used")
    return ("failed" if bad else "ok"), text + (f"; PROBLEM: {bad}" if bad else ""), result


def sum_edit(ctx, path: Path):
    rep = _json(path)  # possibly partial: the benchmark writes it after every measurement
    parts = []
    single = rep.get("s_per_edit_measured", rep.get("s_per_edit_estimated"))
    if single is not None:
        parts.append(f"{single:.2f} s/edit" + ("" if "s_per_edit_measured" in rep else " (estimated)"))
    for k in rep:
        if k.startswith("batch") and k.endswith("_s_per_edit_measured"):
            n = k.split("_")[0]
            parts.append(f"{n}: {rep[k]:.2f} s ({rep[f'{n}_s_per_request']:.2f} s/request)")
    peaks = [f"{rep[k]:.1f}" for k in rep if k.startswith("peak_gpu_memory_gib") and rep[k] is not None]
    if peaks:
        parts.append(f"peak {'/'.join(peaks)} GiB")
    if "batched_speedup" in rep:
        parts.append(f"batched CMA-ES {rep['batched_speedup']:.1f}x vs one by one")
    return ("ok" if rep.get("complete") else "failed"), ", ".join(parts) or "nothing measured", rep


def sum_ddp(ctx, path: Path):
    rep = _json(path)
    r = rep["results"][0]
    ok = r["world_size"] == 2 and r["ranks_equal"] and r["weights_finite"]
    text = f"world {r['world_size']}, ranks equal: {r['ranks_equal']}, {r['s_per_kimg']} s/kimg"
    return ("ok" if ok else "failed"), text, rep


STEPS = [  # the key figures first: a check cut short still yields them
    Step("build", "JIT build of the fused CUDA ops", 210, 90, cmd_build, sum_build),
    Step(
        "train_step",
        "256 px StyleGAN2 iteration, config-f (bf16-mixed, R1 through ADA, PL), s/kimg",
        120,
        60,
        cmd_train_step,
        sum_train_step,
        "train_step.json",
    ),
    Step(
        "train_step_auto",
        "the same with NVIDIA's --cfg=auto networks (their s/kimg setting)",
        90,
        45,
        cmd_train_step_auto,
        sum_train_step,
        "train_step_auto.json",
    ),
    Step("edit", "paper-setting edit, then a batch of 8 requests", 150, 60, cmd_edit, sum_edit, "edit.json"),
    Step(
        "gpu_tests", "gpu-marked tests (kernels vs reference)", 150, 60, cmd_gpu_tests, sum_gpu_tests, "gpu_tests.xml"
    ),
    Step("ops", "benchmarks/ops.py in bf16: each op, fused vs auto vs ref", 90, 30, cmd_ops, sum_ops, "ops.json"),
    Step("ddp", "2-GPU DDP smoke test", 120, 60, cmd_ddp, sum_ddp, "ddp.json"),
    Step(
        "compiled",
        "benchmarks/ops.py: whole G+D step, fused vs ref vs compiled",
        180,
        60,
        cmd_ops_train_step,
        sum_ops_train_step,
        "ops_train_step.json",
    ),
]
STEP_NAMES = ["env"] + [s.name for s in STEPS]


# ------------------------------------------------------------------------------------- running
def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_command(argv: list[str], env: dict, timeout: float, log: Path) -> tuple[int | None, float]:
    """Run argv in its own process group; on timeout kill the group. (returncode or None, seconds)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = None
    return rc, time.perf_counter() - start


def step_env(ctx: Context) -> dict:
    """Versions and the GPU, in this process (torch is imported here anyway)."""
    import importlib.metadata as md

    import torch

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpus": os.cpu_count(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpus": [],
    }
    for i in range(info["gpu_count"]):
        p = torch.cuda.get_device_properties(i)
        info["gpus"].append(
            {
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "multiprocessors": p.multi_processor_count,
            }
        )
    info["gpu"] = info["gpus"][0]["name"] if info["gpus"] else None
    nvcc = shutil.which("nvcc") or (f"{os.environ['CUDA_HOME']}/bin/nvcc" if os.environ.get("CUDA_HOME") else None)
    if nvcc and os.path.exists(nvcc):
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        info["nvcc"] = (re.findall(r"release ([\d.]+)", out) or [out.strip()[-60:]])[0]
    else:
        info["nvcc"] = None
    if shutil.which("nvidia-smi"):
        out = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()
        )
        info["driver"] = out[0] if out else None
    info["packages"] = {
        n: version(n)
        for n in (
            "pytorch-lightning",
            "lightning",
            "torchmetrics",
            "open_clip_torch",
            "wandb",
            "timm",
            "triton",
            "numpy",
            "pytest",
        )
    }
    # Carried as wheels on the device: do they import there? (The dry run only looks them up: the edit
    # step imports open_clip anyway, and nothing else needs wandb.)
    import importlib.util

    for name in ("open_clip", "wandb"):
        if ctx.dry_run:
            info[f"import_{name}"] = "found" if importlib.util.find_spec(name) else "missing"
            continue
        r = subprocess.run(
            [ctx.py, "-c", f"import {name}"], capture_output=True, text=True, env=ctx.env, cwd=ROOT, timeout=120
        )
        info[f"import_{name}"] = "ok" if r.returncode == 0 else _tail(r.stderr, 3)
    return info


class Report:
    def __init__(self, out: Path, log: Path, mode: str, budget: float):
        self.out, self.log, self.t0 = out, log, time.perf_counter()
        self.total = len(STEP_NAMES)  # steps to report, for the progress lines
        self.data = {
            "check": "pbw gpu_check",
            "mode": mode,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "budget_s": budget,
            "steps": [],
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")

    def add(self, entry: dict, log_text: str = "") -> None:
        self.data["steps"].append(entry)
        self.data["total_s"] = round(time.perf_counter() - self.t0, 1)
        self.data["findings"] = findings(self.data["steps"])
        self.out.write_text(json.dumps(self.data, indent=1))
        with open(self.log, "a") as f:
            f.write(f"\n===== {entry['name']}: {entry['status']} ({entry.get('seconds', 0)} s) =====\n")
            if entry.get("command"):
                f.write("$ " + " ".join(entry["command"]) + "\n")
            f.write(log_text)
        print(
            f"[{len(self.data['steps'])}/{self.total}] {entry['name']:15s} {entry['status']:8s} "
            f"{entry.get('seconds', 0):6.1f} s  {entry.get('summary', entry.get('reason', ''))}",
            flush=True,
        )


def findings(steps: list[dict]) -> list[str]:
    """What the issue asks to be said: failures, fused ops slower than the reference, < 1.3x step gain."""
    out = []
    for s in steps:
        if s["status"] in ("failed", "timeout"):
            out.append(f"{s['name']}: {s['status']}: {s.get('summary') or s.get('reason', '')}"[:300])
        r = s.get("result") or {}
        if s["name"] == "ops" and r.get("ops_slower_than_ref"):
            out.append(f"fused ops slower than the reference: {r['ops_slower_than_ref']}")
        if s["name"] == "ops" and r.get("auto_slower_than_ref"):
            out.append(
                f"`auto` slower than the reference (re-measure bias_act's dispatch): {r['auto_slower_than_ref']}"
            )
        if s["name"].startswith("train_step") and r.get("fused_speedup") is not None and r["fused_speedup"] < 1.3:
            out.append(f"the training iteration gains only {r['fused_speedup']}x from the fused ops (< 1.3x)")
    return out


def print_table(report: dict) -> None:
    d = report
    env = next((s.get("result") for s in d["steps"] if s["name"] == "env"), None) or {}
    print(
        f"\npbw GPU check ({d['mode']}): {env.get('gpu') or 'no GPU'}; torch {env.get('torch')}, "
        f"CUDA {env.get('torch_cuda')}, nvcc {env.get('nvcc')}, driver {env.get('driver', '-')}; "
        f"{d.get('total_s')} s of {d['budget_s']} s"
    )
    print(f"| {'step':15s} | {'status':8s} | {'s':>6s} | result")
    print(f"|{'-' * 17}|{'-' * 10}|{'-' * 8}|{'-' * 60}")
    for s in d["steps"]:
        print(
            f"| {s['name']:15s} | {s['status']:8s} | {s.get('seconds', 0):6.1f} | "
            f"{s.get('summary') or s.get('reason', '')}"
        )
    for f in d.get("findings", []):
        print(f"! {f}")


def run_check(args) -> dict:
    import torch

    dry = args.dry_run
    gpus = 0 if dry else torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not dry and not gpus:
        sys.exit(
            "gpu_check: no CUDA device here. Use --dry-run (toy sizes on the CPU), or run it on the device "
            "(see --help)."
        )
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        WANDB_MODE="disabled",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    env.setdefault("PBW_CUDA_OPS_CACHE", str(workdir / "cuda_ops_cache"))
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU also where a GPU is
    if "CUDA_HOME" not in env and os.path.exists("/usr/local/cuda/bin/nvcc"):
        env["CUDA_HOME"] = "/usr/local/cuda"
    ctx = Context(dry, workdir, gpus, args.ddp_cpu, env)
    out = Path(args.out).resolve()
    report = Report(out, out.with_suffix(".log"), "dry-run (CPU, toy sizes)" if dry else "device", args.budget)
    wanted = set(args.steps.split(",")) if args.steps else set(STEP_NAMES)
    unknown = wanted - set(STEP_NAMES)
    if unknown:
        sys.exit(f"gpu_check: unknown steps {sorted(unknown)}; steps: {STEP_NAMES}")
    steps = [s for s in STEPS if s.name in wanted]
    report.total = 1 + len(steps)

    t = time.perf_counter()
    try:
        info, status = step_env(ctx), "ok"
    except Exception as exc:  # noqa: BLE001  (the report must still be written)
        info, status = {"error": f"{type(exc).__name__}: {exc}"}, "failed"
    report.data.update({k: info.get(k) for k in ("gpu", "torch", "torch_cuda", "nvcc", "driver")})
    report.add(
        {
            "name": "env",
            "status": status,
            "seconds": round(time.perf_counter() - t, 1),
            "summary": f"{info.get('gpu') or 'no GPU'}, torch {info.get('torch')}, CUDA {info.get('torch_cuda')}, "
            f"open_clip {info.get('import_open_clip')}, wandb {info.get('import_wandb')}"[:200],
            "result": info,
        }
    )

    deadline = report.t0 + args.budget
    for i, step in enumerate(steps):
        entry = {"name": step.name, "what": step.what}
        cmd = step.command(ctx)
        if isinstance(cmd, str):
            report.add(entry | {"status": "skipped", "reason": cmd, "seconds": 0.0})
            continue
        if ctx.build_failed:
            entry["note"] = "PBW_CUDA_OPS=ref: the fused ops did not build"
        later = sum(s.reserve_s for s in steps[i + 1 :] if not isinstance(s.command(ctx), str))
        timeout = min(step.max_s, deadline - time.perf_counter() - later)
        if timeout < min(step.reserve_s, 30):
            report.add(
                entry
                | {
                    "status": "skipped",
                    "seconds": 0.0,
                    "command": cmd,
                    "reason": f"out of time: the whole check is capped at {args.budget:.0f} s (--budget)",
                }
            )
            continue
        result_path = workdir / step.result_file if step.result_file else None
        if result_path is not None:
            result_path.unlink(missing_ok=True)
        log = workdir / f"{step.name}.log"
        rc, seconds = run_command(cmd, env, timeout, log)
        text = log.read_text(errors="replace")
        entry |= {"command": cmd, "seconds": round(seconds, 1), "timeout_s": round(timeout), "returncode": rc}
        if rc is None:
            entry |= {
                "status": "timeout",
                "reason": f"killed after its {timeout:.0f} s timeout",
                "log_tail": _tail(text),
            }
            if result_path is not None and result_path.exists():  # the benchmarks write partial results
                try:
                    _, summary, result = step.summarize(ctx, result_path)
                    entry |= {"summary": f"{entry['reason']}; partial: {summary}", "result": result}
                except Exception:  # noqa: BLE001
                    pass
        elif result_path is not None and not result_path.exists():
            entry |= {
                "status": "failed",
                "reason": f"exit {rc}, no {result_path.name}: {_tail(text, 1)[:200]}",
                "log_tail": _tail(text),
            }
        else:
            try:
                status, summary, result = step.summarize(ctx, result_path)
            except Exception as exc:  # noqa: BLE001
                status, summary, result = "failed", f"could not read the result: {type(exc).__name__}: {exc}", {}
            if rc != 0 and status != "failed":
                status, summary = "failed", f"exit {rc}; {summary}"
            entry |= {"status": status, "summary": summary, "result": result}
            if status == "skipped":
                entry["reason"] = summary
            if status == "failed":
                entry["log_tail"] = _tail(text)
        if step.name == "build" and entry["status"] in ("failed", "timeout"):
            ctx.build_failed = f"build {entry['status']}"
            env["PBW_CUDA_OPS"] = "ref"  # no step tries the build again
        report.add(entry, text)
    print_table(report.data)
    print(f"\nreport: {out}\nlog:    {report.log}")
    return report.data


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    doc = __doc__.format(BUDGET_S=BUDGET_S)
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (CI)")
    p.add_argument(
        "--out",
        default=None,
        help="the JSON report; the log goes beside it, .log (default: "
        "$OUT/gpu_check.json where the environment sets OUT, else WORKDIR/gpu_check.json)",
    )
    p.add_argument("--workdir", default=None, help="scratch folder (default: /tmp/pbw_gpu_check)")
    p.add_argument(
        "--budget", type=float, default=None, help=f"seconds for the whole check (default: {BUDGET_S}; dry run: 300)"
    )
    p.add_argument(
        "--steps", default=None, help=f"comma-separated subset of {','.join(STEP_NAMES[1:])} (env always runs)"
    )
    p.add_argument("--ddp-cpu", action="store_true", help="--dry-run: run the DDP step on 2 CPU processes")
    args = p.parse_args(argv)
    args.workdir = args.workdir or "/tmp/pbw_gpu_check"
    args.out = args.out or str(Path(os.environ.get("OUT") or args.workdir) / "gpu_check.json")
    args.budget = args.budget or (300 if args.dry_run else BUDGET_S)
    report = run_check(args)
    return 1 if any(s["status"] in ("failed", "timeout") for s in report["steps"]) else 0


if __name__ == "__main__":
    sys.exit(main())
