"""Prebuild pbw's fused CUDA ops and print which are available: `python -m cuda_ops.build`.

Exits with status 1 when the build fails (the compiler output and hints are printed).
"""

from __future__ import annotations

import sys

import torch

from . import loader


def main() -> int:
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}; build folder: {loader.build_dir()}")
    try:
        module = loader.load_extension(required=True)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        for op in loader.OPS:
            print(f"{op}: NOT built, the reference PyTorch implementation will be used")
        return 1
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    for op in loader.OPS:
        if not hasattr(module, op):
            print(f"{op}: missing from the built module")
            return 1
        where = f"fused kernel on {device}" if device else "built, but no CUDA device here (reference path at run time)"
        print(f"{op}: {where}")
    print(f"mode: {loader.get_mode()} (set {loader.ENV_VAR}=auto|ref|cuda)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
