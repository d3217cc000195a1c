"""The loader: the mode setting, a real compile of every op, and the clean fallback of a broken build."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cuda_ops import bias_act, loader, upfirdn2d

ROOT = Path(__file__).resolve().parents[1]


def _env(**overrides):
    env = dict(os.environ)
    env.update(overrides)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_mode_setting(monkeypatch):
    monkeypatch.setattr(loader, "_mode_override", None)
    monkeypatch.delenv(loader.ENV_VAR, raising=False)
    assert loader.get_mode() == "auto"
    monkeypatch.setenv(loader.ENV_VAR, "REF")
    assert loader.get_mode() == "ref"
    loader.set_mode("cuda")
    assert loader.get_mode() == "cuda"
    loader.set_mode(None)
    assert loader.get_mode() == "ref"
    monkeypatch.setenv(loader.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="PBW_CUDA_OPS"):
        loader.get_mode()
    with pytest.raises(ValueError, match="auto"):
        loader.set_mode("gpu")
    with pytest.raises(ValueError, match="impl"):
        bias_act(torch.zeros(2, 2), impl="kernel")


@pytest.mark.parametrize("mode", ["auto", "cuda"])
def test_cpu_tensors_never_trigger_a_build(monkeypatch, mode):
    monkeypatch.setattr(loader, "_tried", False)
    monkeypatch.setattr(loader, "_build", lambda: pytest.fail("a CPU op started a build"))
    loader.set_mode(mode)
    try:
        x = torch.randn(1, 2, 6, 6, requires_grad=True)
        y = upfirdn2d(bias_act(x, torch.zeros(2), act="lrelu"), torch.ones(3) / 3, up=2, down=1, padding=1)
        y.sum().backward()
        assert y.shape == (1, 2, 12, 12) and x.grad is not None
    finally:
        loader.set_mode(None)
    assert loader._tried is False


def test_build_key_depends_on_sources_and_arch(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    key80 = loader.build_key()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert loader.build_key() != key80
    monkeypatch.setenv(loader.CACHE_ENV_VAR, "/some/where")
    assert loader.build_dir() == Path("/some/where") / f"pbw_cuda_ops-{loader.build_key()}"


@pytest.mark.skipif(
    shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"), reason="no CUDA toolkit (nvcc) on this machine"
)
def test_every_op_compiles_and_loads():
    """Builds the one extension from source (about a minute the first time, then cached) and imports it.

    Without a GPU this needs TORCH_CUDA_ARCH_LIST, and CUDA_HOME pointing at the real toolkit root.
    """
    env = _env(
        CUDA_HOME=os.environ.get("CUDA_HOME", "/usr/local/cuda"),
        TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
    )
    run = subprocess.run(
        [sys.executable, "-m", "cuda_ops.build"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for op in loader.OPS:
        line = next(ln for ln in run.stdout.splitlines() if ln.startswith(f"{op}:"))
        assert "NOT built" not in line and "missing" not in line, run.stdout
    folder = Path(run.stdout.split("build folder: ")[1].splitlines()[0])
    assert list(folder.glob(f"{loader.EXTENSION_NAME}*.so")), f"no compiled module in {folder}"


FALLBACK_SCRIPT = textwrap.dedent("""
    import warnings
    import torch
    from cuda_ops import bias_act, loader, upfirdn2d, upsample2d, setup_filter
    from cuda_ops.bias_act import bias_act_ref
    from cuda_ops.upfirdn2d import upfirdn2d_ref

    if not torch.cuda.is_available():  # let CPU tensors take the kernel route, so the build is attempted
        loader.KERNEL_DEVICE_TYPES = ("cuda", "cpu")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    f = setup_filter([1, 3, 3, 1], device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
            b = torch.randn(3, device=device)
            y = upsample2d(bias_act(x, b, act="lrelu", clamp=1.0), f)
            y.square().sum().backward()
            torch.testing.assert_close(y, upfirdn2d_ref(bias_act_ref(x, b, act="lrelu", clamp=1.0), f, up=2,
                                                        padding=[2, 1, 2, 1], gain=4))
            assert x.grad.shape == x.shape
    ours = [w for w in caught if "failed to build" in str(w.message)]
    print("WARNINGS", len(ours))
    print(ours[0].message if ours else "")
    loader.set_mode("cuda")
    try:
        bias_act(torch.randn(2, 3, device=device))
    except RuntimeError as exc:
        print("CUDA MODE RAISED", "PBW_CUDA_OPS=cuda" in str(exc))
""")


@pytest.mark.parametrize(
    "broken,expect",
    [
        ({"CC": "/nonexistent/bin/cc", "CXX": "/nonexistent/bin/c++"}, "/nonexistent/bin/c"),  # compiler output tail
        ({"CUDA_HOME": "/nonexistent/cuda"}, "CUDA_HOME='/nonexistent/cuda' is not a CUDA toolkit root"),
    ],
)
def test_broken_build_falls_back_to_reference_and_warns_once(tmp_path, broken, expect):
    """A compiler or toolkit that does not exist: the ops still work (reference) and the warning appears once."""
    env = _env(
        PBW_CUDA_OPS="auto",
        PBW_CUDA_OPS_CACHE=str(tmp_path / "cache"),
        CUDA_HOME=os.environ.get("CUDA_HOME", "/usr/local/cuda"),
        TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
    )
    env.update(broken)
    run = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNINGS 1" in run.stdout, run.stdout + run.stderr
    assert expect in run.stdout and "To fix it" in run.stdout, run.stdout
    assert "PBW_CUDA_OPS=ref" in run.stdout
    assert "CUDA MODE RAISED True" in run.stdout, run.stdout + run.stderr
