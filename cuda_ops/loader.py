"""The one loader of pbw's fused CUDA ops, and the setting that chooses between them and the reference.

All ops are compiled as ONE extension module (`pbw_cuda_ops`) by `torch.utils.cpp_extension.load`
(ninja), into a cache folder keyed by a hash of the sources, the torch/CUDA/Python versions and the
target architectures. A file lock keeps DDP ranks from building the same folder at once: the first
builds, the others wait and load the result. The build is tried at most once per process; if it
fails, one warning shows the end of the compiler output and what to fix, and every op uses its
reference PyTorch implementation from then on.

The setting, `PBW_CUDA_OPS` in the environment or :func:`set_mode` (e.g. from a config):
  - ``auto`` (default): fused kernels for CUDA tensors when the build works, else the reference.
  - ``ref``: never build; always the reference.
  - ``cuda``: CUDA tensors must use the kernels; a failed build raises.
CPU tensors always take the reference path and never trigger a build.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

MODES = ("auto", "ref", "cuda")
ENV_VAR = "PBW_CUDA_OPS"
CACHE_ENV_VAR = "PBW_CUDA_OPS_CACHE"
EXTENSION_NAME = "pbw_cuda_ops"
SOURCES = ("ops.cpp", "bias_act.cu", "upfirdn2d.cu")
OPS = ("bias_act", "upfirdn2d")
# Device types the kernels run on; tensors on any other device take the reference path.
KERNEL_DEVICE_TYPES = ("cuda",)

_EXTRA_CFLAGS = ["-O3"]
_EXTRA_CUDA_CFLAGS = ["-O3"]
_OUTPUT_TAIL_LINES = 25

_log = logging.getLogger(__name__)
_mode_override: str | None = None
_tried = False
_module: ModuleType | None = None
_error: str | None = None


def _check_mode(mode: str, source: str) -> str:
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{source} must be one of {MODES}, got {mode!r}")
    return mode


def set_mode(mode: str | None) -> None:
    """Choose `auto`, `ref` or `cuda` for this process; None returns to the `PBW_CUDA_OPS` setting."""
    global _mode_override
    _mode_override = None if mode is None else _check_mode(mode, "the cuda_ops mode")


def get_mode() -> str:
    """The current mode: :func:`set_mode`'s value, else `PBW_CUDA_OPS`, else `auto`."""
    if _mode_override is not None:
        return _mode_override
    return _check_mode(os.environ.get(ENV_VAR, "auto") or "auto", f"the environment variable {ENV_VAR}")


def use_kernel(x: torch.Tensor, impl: str | None = None) -> bool:
    """Whether an op on `x` should run the fused kernel (`impl` overrides the mode for one call).

    Builds the extension on the first CUDA tensor in `auto`/`cuda` mode; never for CPU tensors.
    """
    mode = get_mode() if impl is None else _check_mode(impl, "impl")
    if mode == "ref" or x.device.type not in KERNEL_DEVICE_TYPES:
        return False
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        if mode == "cuda":
            raise TypeError(f"the fused CUDA ops support float16/bfloat16/float32/float64, got {x.dtype}")
        return False
    return load_extension(required=mode == "cuda") is not None


def source_dir() -> Path:
    return Path(__file__).resolve().parent


def _visible_archs() -> str:
    if not torch.cuda.is_available():
        return ""
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))


def build_key() -> str:
    """Hash of everything the compiled module depends on: sources, versions, architectures, flags."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode())
        h.update((source_dir() / name).read_bytes())
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or _visible_archs()  # torch targets the visible GPUs by default
    for part in (
        torch.__version__,
        str(torch.version.cuda),
        sys.version,
        arch,
        " ".join(_EXTRA_CFLAGS),
        " ".join(_EXTRA_CUDA_CFLAGS),
    ):
        h.update(part.encode())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    """The folder this process builds into: `$PBW_CUDA_OPS_CACHE` (default ~/.cache/pbw/cuda_ops)/<key>."""
    root = (
        os.environ.get(CACHE_ENV_VAR)
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pbw" / "cuda_ops"
    )
    return Path(root) / f"{EXTENSION_NAME}-{build_key()}"


def _build() -> ModuleType:
    from filelock import FileLock
    from torch.utils import cpp_extension

    cuda_home = cpp_extension.CUDA_HOME
    if cuda_home is None or not (Path(cuda_home) / "include" / "cuda_runtime.h").exists():
        raise RuntimeError(f"no CUDA toolkit found (torch uses CUDA_HOME={cuda_home!r})")  # fail before compiling
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        # torch keeps its own lock file inside the folder, which a killed build leaves behind and
        # which would then block every later build; under our lock no other build can be running.
        (folder / "lock").unlink(missing_ok=True)
        _log.info("building/loading the fused CUDA ops in %s", folder)
        return cpp_extension.load(
            name=EXTENSION_NAME,
            sources=[str(source_dir() / name) for name in SOURCES],
            extra_cflags=_EXTRA_CFLAGS,
            extra_cuda_cflags=_EXTRA_CUDA_CFLAGS,
            build_directory=str(folder),
            verbose=False,
        )


def _hints() -> str:
    from torch.utils import cpp_extension

    cuda_home = cpp_extension.CUDA_HOME
    lines = ["To fix it:"]
    if cuda_home is None or not (Path(cuda_home) / "include" / "cuda_runtime.h").exists():
        lines.append(
            f"  - CUDA_HOME={cuda_home!r} is not a CUDA toolkit root (no include/cuda_runtime.h): set the "
            "CUDA_HOME environment variable to it (e.g. /usr/local/cuda) before starting Python;"
        )
    else:
        lines.append(
            f"  - check the toolkit at CUDA_HOME={cuda_home} (its nvcc should match torch's CUDA {torch.version.cuda});"
        )
    if not cpp_extension.is_ninja_available():
        lines.append("  - install ninja (pip install ninja);")
    lines.append(
        f"  - make sure the host compiler (CXX={os.environ.get('CXX', 'c++')}, CC={os.environ.get('CC', 'unset')}) "
        "exists and is supported by this nvcc;"
    )
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        lines.append("  - without a visible GPU, set TORCH_CUDA_ARCH_LIST (e.g. '8.0;9.0');")
    lines.append(f"  - or set {ENV_VAR}=ref to skip the build. Rebuild and check with `python -m cuda_ops.build`.")
    return "\n".join(lines)


def load_extension(required: bool = False) -> ModuleType | None:
    """The compiled module, building it on the first call of the process; None if that build failed.

    A failed build warns once (compiler output tail + hints); with `required` it raises instead.
    """
    global _tried, _module, _error
    if not _tried:
        _tried = True
        try:
            _module = _build()
        except Exception as exc:  # any build failure (compiler, toolkit, ninja, import) means: use the reference
            tail = "\n".join(str(exc).strip().splitlines()[-_OUTPUT_TAIL_LINES:])
            _error = (
                f"pbw's fused CUDA ops failed to build ({type(exc).__name__}); the last lines of the output:\n"
                f"{tail}\n{_hints()}"
            )
            if not required:
                warnings.warn(
                    _error + "\nFalling back to the (slower) reference PyTorch ops.", RuntimeWarning, stacklevel=3
                )
    if _module is None and required:
        raise RuntimeError(
            f"the fused CUDA ops are required ({ENV_VAR}=cuda, or a prebuild) but are not available.\n{_error}"
        )
    return _module


def build_error() -> str | None:
    """The failure message of this process's build attempt, or None."""
    return _error
