"""One prepared GPU check: every GPU-only part of pbw in one command, under 8 minutes on one H100/H200.

Steps (each in its own process, with its own timeout; a failing step is recorded and the next runs):
  env             GPU, driver, torch/CUDA/cuDNN/nvcc versions, open_clip and wandb
  build           the fused CUDA ops' JIT build (python -m cuda_ops.build); later steps reuse it
  gpu_tests       the `gpu`-marked tests: kernels vs reference (fwd, bwd, double bwd, fp32/fp16/bf16,
                  contiguous/channels_last, the 256 px shapes)
  ops             benchmarks/ops.py: each op of a 256 px config-f G and D, fused vs reference vs the
                  compiled reference (compiled at 256 px only, to fit the time), time and peak memory
  train_step      benchmarks/train_step.py --lightning: the 256 px StyleGAN2 training iteration
                  (configs/stylegan2/cub256.yaml: batch 64 per GPU, bf16-mixed, lazy R1/PL, ADA, EMA),
                  fused vs reference kernels, as s/kimg (NVIDIA: about 21.6-24.2 s/kimg on one V100)
  edit            benchmarks/edit.py: a paper-setting edit (256 px StyleGAN2 and ViT-B-32, random
                  weights; 20 x 50 CMA-ES + 100 Adam, 32 crops), batched vs candidate by candidate,
                  and a batch of 8 requests
  ddp             a 2-GPU DDP smoke test of the trainer (NCCL; ranks must end equal); skipped with
                  fewer than 2 GPUs
  ops_train_step  benchmarks/ops.py's whole 256 px G+D step (with R1), fused vs reference vs
                  torch.compile'd reference (last: its compile is the slowest part)
It writes one JSON report (rewritten after every step, so a killed run still leaves one) and a log
with every step's output beside it, and prints a short table.

Prepare here (a machine with pip and its package index; the device has no internet):

    python benchmarks/gpu_check.py --prepare

downloads open_clip_torch, jsonargparse[signatures] and wandb (the versions installed here) and the dependencies the device
lacks as Python 3.12 manylinux x86-64 wheels into .whl/ (ignored by git), checks the 64 MiB that a
device call may carry, and prints the device command. On the device (the `run` tool):

    carry:     [".whl"]
    command:   {DEVICE_COMMAND}
    timeout_s: {TIMEOUT_S}

The check caps itself at {BUDGET_S} s (--budget; each step also has its own timeout, and later steps
keep a reserve); the report comes back as $OUT/gpu_check.json and $OUT/gpu_check.log. A session has
15 minutes of device time in all, so there is no time for a second full run: to rerun some steps,
add `--steps build,train_step` (names above; keep `build` first: it builds the kernels once for
all later steps, and is a cache hit on a machine still warm) and a smaller timeout_s.

Without CUDA, `--dry-run` walks the same steps at toy sizes on the CPU (32 px narrow StyleGAN2, the
tiny CLIP, a few generations/steps; no torch.compile); steps that need a GPU say why they skipped:

    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json
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
WHEEL_DIR = ".whl"
CARRY_LIMIT_MIB = 64
BUDGET_S = 470  # the whole check, JIT build included: < 8 minutes
TIMEOUT_S = 570  # the device call: the budget + wheel install + start-up, < the 10-minute cap
INSTALL = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
    f"--target /tmp/site {WHEEL_DIR}/*.whl || echo 'gpu_check: the wheel install failed; checking without it';"
    " export PYTHONPATH=/tmp/site;"
)  # a failed install must not cost the report: env/edit then say what is missing
DEVICE_COMMAND = f"{INSTALL} PYTHONUNBUFFERED=1 bash scripts/gpu_check.sh --out $OUT/gpu_check.json"
NVIDIA_V100_S_PER_KIMG = "21.6-24.2"  # stylegan2-ada-pytorch's expected training time, 256 px, one V100

# Python packages on the device image (.library/device/KINDS.md, nvidia-h200, read 2026-11-17): not carried.
DEVICE_PACKAGES = set(
    [
        "absl-py",
        "accelerate",
        "aiofiles",
        "aiohappyeyeballs",
        "aiohttp",
        "aiosignal",
        "annotated-doc",
        "anyio",
        "attrs",
        "botorch",
        "build",
        "certifi",
        "charset-normalizer",
        "chex",
        "click",
        "cloudpickle",
        "cmake",
        "colorama",
        "contourpy",
        "coverage",
        "cuda-bindings",
        "cuda-core",
        "cuda-pathfinder",
        "cuda-toolkit",
        "cupy-cuda13x",
        "cycler",
        "cython",
        "diffrax",
        "e3nn",
        "einops",
        "equinox",
        "etils",
        "execnet",
        "filelock",
        "flatbuffers",
        "flax",
        "fonttools",
        "formulaic",
        "frozenlist",
        "fsspec",
        "gpytorch",
        "grpcio",
        "h11",
        "h5py",
        "hf-xet",
        "httpcore",
        "httpx",
        "huggingface-hub",
        "humanize",
        "hypothesis",
        "idna",
        "imageio",
        "iniconfig",
        "interface-meta",
        "jax",
        "jax-cuda13-pjrt",
        "jax-cuda13-plugin",
        "jaxlib",
        "jaxtyping",
        "jinja2",
        "joblib",
        "kiwisolver",
        "lazy-loader",
        "lightning",
        "lightning-utilities",
        "linear-operator",
        "lineax",
        "llvmlite",
        "lxml",
        "markdown",
        "markdown-it-py",
        "markupsafe",
        "matplotlib",
        "mdurl",
        "meson",
        "ml-dtypes",
        "mpi4py",
        "mpmath",
        "msgpack",
        "multidict",
        "multipledispatch",
        "mypy-extensions",
        "nanobind",
        "narwhals",
        "networkx",
        "ninja",
        "numba",
        "numba-cuda",
        "numpy",
        "numpyro",
        "nvidia-cublas",
        "nvidia-cuda-cupti",
        "nvidia-cuda-nvrtc",
        "nvidia-cuda-runtime",
        "nvidia-cudnn-cu13",
        "nvidia-cufft",
        "nvidia-cufile",
        "nvidia-curand",
        "nvidia-cusolver",
        "nvidia-cusparse",
        "nvidia-cusparselt-cu13",
        "nvidia-ml-py",
        "nvidia-nccl-cu13",
        "nvidia-nvjitlink",
        "nvidia-nvshmem-cu13",
        "nvidia-nvtx",
        "onnx",
        "onnx-ir",
        "onnxruntime",
        "onnxscript",
        "opencv-python-headless",
        "optax",
        "opt-einsum",
        "opt-einsum-fx",
        "optimistix",
        "orbax-checkpoint",
        "packaging",
        "pandas",
        "pathspec",
        "patsy",
        "peft",
        "pillow",
        "pip",
        "pluggy",
        "portalocker",
        "prometheus-client",
        "propcache",
        "protobuf",
        "psutil",
        "pyarrow",
        "pybind11",
        "py-cpuinfo",
        "pyre-extensions",
        "pygments",
        "pyparsing",
        "pyproject-hooks",
        "pytest",
        "pytest-benchmark",
        "pytest-cov",
        "pytest-mock",
        "pytest-timeout",
        "pytest-xdist",
        "python-dateutil",
        "pytorch-lightning",
        "pyyaml",
        "regex",
        "requests",
        "rich",
        "sacrebleu",
        "safetensors",
        "scikit-build-core",
        "scikit-image",
        "scikit-learn",
        "scipy",
        "seaborn",
        "sentencepiece",
        "sentence-transformers",
        "setuptools",
        "shellingham",
        "simplejson",
        "six",
        "sortedcontainers",
        "statsmodels",
        "sympy",
        "tabulate",
        "tensorboard",
        "tensorboard-data-server",
        "tensorstore",
        "threadpoolctl",
        "tifffile",
        "tiktoken",
        "timm",
        "tokenizers",
        "toolz",
        "torch",
        "torchaudio",
        "torchdiffeq",
        "torch-geometric",
        "torchmetrics",
        "torchvision",
        "tqdm",
        "transformers",
        "treescope",
        "triton",
        "typer",
        "typing-extensions",
        "typing-inspect",
        "urllib3",
        "uvloop",
        "wadler-lindig",
        "werkzeug",
        "wheel",
        "wrapt",
        "xarray",
        "xxhash",
        "yarl",
        "zipp",
    ]
)
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
]
DEVICE_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


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


def cmd_ops(ctx: Context):
    base = [ctx.py, "benchmarks/ops.py", "--json", ctx.path("ops.json"), "--no-train-step"]
    if ctx.dry_run:
        return base + [
            "--device",
            "cpu",
            "--resolution",
            "16",
            "--batch",
            "2",
            "--channel-base",
            "64",
            "--channel-max",
            "8",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--no-compile",
        ]
    return base + ["--iters", "10", "--warmup", "3", "--compile-res", "256"]


def cmd_ops_train_step(ctx: Context):
    base = [ctx.py, "benchmarks/ops.py", "--json", ctx.path("ops_train_step.json"), "--no-ops"]
    if ctx.dry_run:
        return base + [
            "--device",
            "cpu",
            "--resolution",
            "32",
            "--batch",
            "2",
            "--channel-base",
            "64",
            "--channel-max",
            "8",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--no-compile",
        ]
    return base + ["--iters", "8", "--warmup", "2"]


TOY_SG2 = ["--resolution", "32", "--channel-base", "256", "--channel-max", "16"]


def cmd_train_step(ctx: Context):
    base = [
        ctx.py,
        "benchmarks/train_step.py",
        "--lightning",
        "configs/stylegan2/cub256.yaml",
        "--json",
        ctx.path("train_step.json"),
    ]
    if ctx.dry_run:
        return (
            base
            + TOY_SG2
            + ["--batch", "2", "--steps", "2", "--warmup", "1", "--accelerator", "cpu", "--cuda-ops", "auto"]
        )
    return base + ["--cuda-ops", "ref" if ctx.build_failed else "cuda,ref", "--steps", "16", "--warmup", "4"]


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
        "configs/stylegan2/cub256.yaml",
        "--json",
        ctx.path("ddp.json"),
        "--devices",
        "2",
        "--strategy",
        "ddp_find_unused_parameters_true",
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
        "ops_slower_than_compiled_ref": {k: v for k, v in compiled.items() if v < 1},
        "errors": errors,
        "ops": rep["ops"],
    }
    if not fused:
        return "ok", f"{len(rep['ops'])} ops, reference only ({rep['cuda_ops'][:60]})", result
    text = f"fused vs ref {result['geomean_ref_over_fused']}x (geomean, slowest {min(fused.values())}x)" + (
        f", vs compiled {result['geomean_compiled_over_fused']}x" if compiled else ""
    )
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
    result = {**rep, "nvidia_v100_s_per_kimg": NVIDIA_V100_S_PER_KIMG}
    text = ", ".join(f"{m} {r['s_per_kimg']} s/kimg" if "error" not in r else f"{m} FAILED" for m, r in by_mode.items())
    if "fused_speedup" in rep:
        text += f"; fused {rep['fused_speedup']}x"
    text += f" (batch {rep['batch_per_device']}, {rep['precision']}; V100: {NVIDIA_V100_S_PER_KIMG})"
    bad = [
        f"{m}: {r['error'][:150]}" if "error" in r else f"{m}: non-finite weights"
        for m, r in by_mode.items()
        if "error" in r or not r["weights_finite"]
    ]
    if not ctx.dry_run and "cuda" in by_mode and not by_mode["cuda"].get("fused_kernels_used", True):
        bad.append("fused kernels not used")
    return ("failed" if bad else "ok"), text + (f"; PROBLEM: {bad}" if bad else ""), result


def sum_edit(ctx, path: Path):
    rep = _json(path)
    keys = [k for k in rep if k.startswith("batch") and k.endswith("_s_per_request")]
    text = (
        f"{rep.get('s_per_edit_measured', rep['s_per_edit_estimated']):.2f} s/edit, batched CMA-ES "
        f"{rep['batched_speedup']:.1f}x vs one by one"
    )
    if keys:
        text += f", {keys[0].split('_')[0]}: {rep[keys[0]]:.2f} s/request"
    return "ok", text, rep


def sum_ddp(ctx, path: Path):
    rep = _json(path)
    r = rep["results"][0]
    ok = r["world_size"] == 2 and r["ranks_equal"] and r["weights_finite"]
    text = f"world {r['world_size']}, ranks equal: {r['ranks_equal']}, {r['s_per_kimg']} s/kimg"
    return ("ok" if ok else "failed"), text, rep


STEPS = [
    Step("build", "JIT build of the fused CUDA ops", 210, 90, cmd_build, sum_build),
    Step(
        "gpu_tests", "gpu-marked tests (kernels vs reference)", 150, 60, cmd_gpu_tests, sum_gpu_tests, "gpu_tests.xml"
    ),
    Step("ops", "benchmarks/ops.py: each op, fused vs ref vs compiled", 120, 40, cmd_ops, sum_ops, "ops.json"),
    Step(
        "train_step",
        "256 px StyleGAN2 iteration (bf16-mixed, lazy reg.), s/kimg",
        120,
        60,
        cmd_train_step,
        sum_train_step,
        "train_step.json",
    ),
    Step("edit", "paper-setting edit: batched vs one by one, batch of 8", 150, 60, cmd_edit, sum_edit, "edit.json"),
    Step("ddp", "2-GPU DDP smoke test", 120, 60, cmd_ddp, sum_ddp, "ddp.json"),
    Step(
        "ops_train_step",
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
        if s["name"] == "train_step" and r.get("fused_speedup") is not None and r["fused_speedup"] < 1.3:
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


# ------------------------------------------------------------------------------------- prepare
def _pip_download(specs: list[str], dest: Path) -> None:
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *platforms,
        "-d",
        str(dest),
        *specs,
    ]
    subprocess.run(cmd, check=True)


def _wheel_name_version(path: Path) -> tuple[str, str]:
    from packaging.utils import canonicalize_name, parse_wheel_filename

    name, version, *_ = parse_wheel_filename(path.name)
    return canonicalize_name(name), str(version)


def _requirements(path: Path) -> list:
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(DEVICE_MARKERS):
                reqs.append(req)
    return reqs


def download_closure(roots: list[str], dest: Path, have: dict[str, str]) -> list[Path]:
    """Download `roots` and, level by level, every requirement the device lacks; returns new wheels."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    new, todo = [], list(roots)
    while todo:
        before = set(dest.glob("*.whl"))
        _pip_download(todo, dest)
        added = sorted(set(dest.glob("*.whl")) - before)
        for wheel in added:
            name, version = _wheel_name_version(wheel)
            have[name] = version
        new += added
        todo = []
        for wheel in added:
            for req in _requirements(wheel):
                name = canonicalize_name(req.name)
                if (
                    name in DEVICE_PACKAGES
                    or name in have
                    or any(canonicalize_name(Requirement(t).name) == name for t in todo)
                ):
                    continue
                todo.append(f"{req.name}{req.specifier}")
    return new


def travelling_bytes(wheel_dir: Path) -> tuple[int, int]:
    """(bytes of the working tree that a device call sends: tracked + untracked-not-ignored, wheel bytes)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    tree = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    wheels = sum(p.stat().st_size for p in wheel_dir.glob("*.whl"))
    return tree, wheels


def prepare(args) -> int:
    import importlib.metadata as md

    dest = ROOT / WHEEL_DIR
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()

    def pinned(dist):
        try:
            return f"{dist}=={md.version(dist)}"
        except md.PackageNotFoundError:
            return dist

    have: dict[str, str] = {}
    print(f"downloading {pinned('open_clip_torch')} and what the device lacks of its dependencies into {dest}")
    clip_wheels = download_closure([pinned("open_clip_torch")], dest, have)
    print(f"downloading {pinned('jsonargparse')} with its [signatures] extras (train.py's command line)")
    download_closure([pinned(d) for d in ("jsonargparse", "docstring_parser", "typeshed_client")], dest, have)
    wandb_wheels: list[Path] = []
    if not args.no_wandb:
        print(f"downloading {pinned('wandb')} and its missing dependencies")
        wandb_wheels = download_closure([pinned("wandb")], dest, have)
    tree, wheels = travelling_bytes(dest)
    limit = CARRY_LIMIT_MIB * 2**20
    if tree + wheels > limit and wandb_wheels:
        print(
            f"the working tree ({tree / 2**20:.1f} MiB) and all wheels ({wheels / 2**20:.1f} MiB) exceed the "
            f"{CARRY_LIMIT_MIB} MiB a device call carries: leaving wandb out (nothing in the check needs it)"
        )
        for w in wandb_wheels:
            w.unlink()
        wandb_wheels = []
        tree, wheels = travelling_bytes(dest)
    print(f"\n{'wheel':70s} {'MiB':>7s}")
    for w in sorted(dest.glob("*.whl")):
        print(f"{w.name:70s} {w.stat().st_size / 2**20:7.2f}")
    total = tree + wheels
    print(f"{'working tree (tracked + untracked, not ignored)':70s} {tree / 2**20:7.2f}")
    print(f"{'total a device call carries':70s} {total / 2**20:7.2f}  (limit {CARRY_LIMIT_MIB} MiB)")
    if total > limit:
        print("TOO LARGE for one device call: remove untracked files or wheels", file=sys.stderr)
        return 1
    print(f"""
On the device (the `run` tool), from the repository root:
  carry:     ["{WHEEL_DIR}"]
  command:   {DEVICE_COMMAND}
  timeout_s: {TIMEOUT_S}
The check caps itself at {BUDGET_S} s; $OUT/gpu_check.json and $OUT/gpu_check.log come back.""")
    return 0


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    doc = __doc__.format(DEVICE_COMMAND=DEVICE_COMMAND, TIMEOUT_S=TIMEOUT_S, BUDGET_S=BUDGET_S)
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", action="store_true", help="download the wheels to carry (here, not on the device)")
    p.add_argument("--no-wandb", action="store_true", help="--prepare: leave wandb out")
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (CI)")
    p.add_argument(
        "--out",
        default=None,
        help="the JSON report; the log goes beside it, .log (default: "
        "$OUT/gpu_check.json where OUT is set, else WORKDIR/gpu_check.json)",
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
    if args.prepare:
        return prepare(args)
    args.workdir = args.workdir or "/tmp/pbw_gpu_check"
    args.out = args.out or str(Path(os.environ.get("OUT") or args.workdir) / "gpu_check.json")
    args.budget = args.budget or (300 if args.dry_run else BUDGET_S)
    report = run_check(args)
    return 1 if any(s["status"] in ("failed", "timeout") for s in report["steps"]) else 0


if __name__ == "__main__":
    sys.exit(main())
