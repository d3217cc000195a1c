"""Wheels for a GPU machine without internet: `bash scripts/gpu_check.sh --prepare` (this script).

Run it where pip reaches a package index. It downloads open_clip_torch, jsonargparse[signatures] and wandb
(the versions installed here) and the dependencies that a GPU machine image with torch, Lightning and
pytest lacks, as Python 3.12 manylinux x86-64 wheels, into .whl/ (ignored by git), checks that the
repository and the wheels fit in `--max-mib`, and prints the command that installs them on the GPU
machine (pip, from the folder, no index) before the check:

    python benchmarks/offline_wheels.py [--no-wandb] [--max-mib 64]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = ".whl"
INSTALL_COMMAND = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
    f"--target /tmp/site {WHEEL_DIR}/*.whl && export PYTHONPATH=/tmp/site"
)

# Python packages already installed on the GPU machine image (torch, Lightning, pytest...): not downloaded.
DEVICE_PACKAGES = {
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
}
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
    """(bytes of the working tree to copy: tracked + untracked-not-ignored, wheel bytes)."""
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
    print(f"downloading {pinned('open_clip_torch')} and what the GPU machine lacks of its dependencies into {dest}")
    download_closure([pinned("open_clip_torch")], dest, have)
    print(f"downloading {pinned('jsonargparse')} with its [signatures] extras (train.py's command line)")
    download_closure([pinned(d) for d in ("jsonargparse", "docstring_parser", "typeshed_client")], dest, have)
    wandb_wheels: list[Path] = []
    if not args.no_wandb:
        print(f"downloading {pinned('wandb')} and its missing dependencies")
        wandb_wheels = download_closure([pinned("wandb")], dest, have)
    tree, wheels = travelling_bytes(dest)
    limit = args.max_mib * 2**20
    if tree + wheels > limit and wandb_wheels:
        print(
            f"the working tree ({tree / 2**20:.1f} MiB) and all wheels ({wheels / 2**20:.1f} MiB) exceed "
            f"--max-mib {args.max_mib}: leaving wandb out (nothing in the GPU check needs it)"
        )
        for w in wandb_wheels:
            w.unlink()
        tree, wheels = travelling_bytes(dest)
    print(f"\n{'wheel':70s} {'MiB':>7s}")
    for w in sorted(dest.glob("*.whl")):
        print(f"{w.name:70s} {w.stat().st_size / 2**20:7.2f}")
    total = tree + wheels
    print(f"{'working tree (tracked + untracked, not ignored)':70s} {tree / 2**20:7.2f}")
    print(f"{'total to copy':70s} {total / 2**20:7.2f}  (--max-mib {args.max_mib})")
    if total > limit:
        print("too large: remove untracked files or wheels, or raise --max-mib", file=sys.stderr)
        return 1
    print(f"""
Copy the repository with {WHEEL_DIR}/ to the GPU machine; there, from the repository root:
  {INSTALL_COMMAND}
  bash scripts/gpu_check.sh --out gpu_check.json""")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-wandb", action="store_true", help="leave wandb out")
    p.add_argument(
        "--max-mib", type=int, default=64, help="the most the repository and wheels together may weigh (MiB)"
    )
    return prepare(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
