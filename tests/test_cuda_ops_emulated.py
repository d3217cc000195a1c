"""The CUDA kernels' own code, compiled for the CPU and checked against the reference on a GPU-less machine.

The .cu sources are compiled as host C++ with a small shim: `__global__`/`__device__` vanish, a
launch `k<<<grid, block, shmem, stream>>>(...)` becomes a plain call, and blockIdx = threadIdx = 0
with blockDim = gridDim = 1 make every grid-stride loop visit all elements in one thread. The host
wrappers run unchanged except for the CUDA-only device checks, guards and streams. This checks the
index math, layouts, dtype dispatch and derivative formulas of the real kernels (not their
parallel behaviour), through the same autograd Functions the GPU path uses.
"""

import hashlib
import re

import pytest
import torch

from cuda_ops import ACTIVATIONS, bias_act, loader, upfirdn2d

pytestmark = pytest.mark.slow

SHIM = """#include <torch/extension.h>
#include <algorithm>
#include <cmath>
struct EmuDim3 { unsigned x, y, z; };
static EmuDim3 blockIdx{0, 0, 0}, threadIdx{0, 0, 0}, blockDim{1, 1, 1}, gridDim{1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __syncthreads()
#define C10_CUDA_KERNEL_LAUNCH_CHECK()
using std::max;
using std::min;
namespace { float ks[12288]; }  // upfirdn2d's `extern __shared__` filter taps
"""


def _host_source() -> str:
    parts = [SHIM]
    for name in ("bias_act.cu", "upfirdn2d.cu"):
        s = (loader.source_dir() / name).read_text()
        s = re.sub(r"#include <c10/cuda/[^>]*>", "", s)
        s = re.sub(r"<<<[^>]*>>>", "", s)
        s = s.replace(".is_cuda()", ".is_cpu()")
        s = re.sub(r".*(CUDAGuard device_guard|cudaStream_t stream).*\n", "", s)
        parts.append(s)
    parts.append((loader.source_dir() / "ops.cpp").read_text().replace("#include <torch/extension.h>", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def emulated():
    """The host build of the kernels (cached next to the CUDA builds, keyed by the sources and torch)."""
    from filelock import FileLock
    from torch.utils.cpp_extension import load

    source = _host_source()
    key = hashlib.sha256((source + torch.__version__).encode()).hexdigest()[:16]
    folder = loader.build_dir().parent / f"emulated-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "emulated_ops.cpp"
    with FileLock(str(folder) + ".lock"):
        if not path.exists() or path.read_text() != source:
            path.write_text(source)
        module = load(
            name="pbw_cuda_ops_emulated",
            sources=[str(path)],
            extra_cflags=["-O2"],
            build_directory=str(folder),
            verbose=False,
        )
    saved = (loader._module, loader._tried, loader.KERNEL_DEVICE_TYPES)
    loader._module, loader._tried, loader.KERNEL_DEVICE_TYPES = module, True, ("cpu",)
    yield module
    loader._module, loader._tried, loader.KERNEL_DEVICE_TYPES = saved


def _first_and_second_order(fn, inputs, dy, weights):
    y = fn(*inputs)
    dy = dy.clone().requires_grad_()
    g1 = torch.autograd.grad(y, inputs, dy, create_graph=True)
    g2 = torch.autograd.grad(
        sum((g * w).sum() for g, w in zip(g1, weights, strict=True)), [*inputs, dy], allow_unused=True
    )
    return [y, *g1, *g2]


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_bias_act_kernel_code_matches_reference(emulated, act, dtype, tol):
    g = torch.Generator().manual_seed(0)
    for layout, clamp, dim in [
        (torch.contiguous_format, None, 1),
        (torch.channels_last, 0.7, 1),
        (torch.contiguous_format, 0.7, 3),
    ]:
        x = (torch.randn(2, 5, 4, 3, generator=g) * 2).to(dtype).contiguous(memory_format=layout)
        b = torch.randn(x.shape[dim], generator=g).to(dtype)
        dy, wx, wb = (torch.randn(t.shape, generator=g).to(dtype) for t in (x, x, b))
        got = _first_and_second_order(
            lambda x, b: bias_act(x, b, dim=dim, act=act, clamp=clamp, impl="cuda"),
            [x.clone().requires_grad_(), b.clone().requires_grad_()],
            dy,
            [wx, wb],
        )
        want = _first_and_second_order(
            lambda x, b: bias_act(x, b, dim=dim, act=act, clamp=clamp, impl="ref"),
            [x.double().requires_grad_(), b.double().requires_grad_()],
            dy.double(),
            [wx.double(), wb.double()],
        )
        assert got[0].is_contiguous(memory_format=layout)
        for i, (a, w) in enumerate(zip(got, want, strict=True)):
            if a is None or w is None:  # no second-order path: the other side must be zero too
                other = w if a is None else a
                assert other is None or other.abs().max() == 0
                continue
            scale = max(1.0, w.abs().max().item()) * (4 if i >= 3 and dtype != torch.float32 else 1)
            torch.testing.assert_close(a.double(), w, rtol=tol, atol=tol * scale, msg=f"output {i}, {layout}")


@pytest.mark.parametrize("act", ["lrelu", "tanh", "elu", "swish"])
def test_bias_act_kernel_code_gradgradcheck(emulated, act):
    g = torch.Generator().manual_seed(1)
    sign = torch.randint(0, 2, (2, 3, 2, 3), generator=g) * 2 - 1
    x = (sign * (torch.rand(2, 3, 2, 3, generator=g, dtype=torch.float64) + 0.1)).requires_grad_()
    b = (torch.randn(3, generator=g, dtype=torch.float64) * 0.05).requires_grad_()

    def fn(x, b):
        return bias_act(x, b, act=act, clamp=0.8 if act == "tanh" else None, impl="cuda")

    assert torch.autograd.gradcheck(fn, (x, b)) and torch.autograd.gradgradcheck(fn, (x, b))


CONFIGS = [
    ((1, 1), (1, 1), (1, 2, 1, 2), [1, 3, 3, 1]),
    ((2, 2), (1, 1), (2, 1, 2, 1), [1, 3, 3, 1]),
    ((1, 1), (2, 2), (1, 1, 1, 1), [1, 3, 3, 1]),
    ((2, 1), (1, 3), (3, -1, 0, 2), [1, 2, 3]),
    ((3, 2), (2, 1), (-1, 2, 1, 0), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]),
    ((1, 1), (1, 1), (-2, -1, -3, 0), [1, 2]),
    ((1, 1), (1, 1), (0, 0, 0, 0), None),
]


@pytest.mark.parametrize("up,down,pad,f", CONFIGS)
def test_upfirdn2d_kernel_code_matches_reference(emulated, up, down, pad, f):
    ft = None if f is None else torch.as_tensor(f, dtype=torch.float32)
    ft = None if ft is None else ft / ft.sum()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)

    def fn(x, impl="cuda", flip=False):
        return upfirdn2d(x, ft, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5, impl=impl)

    for flip in (False, True):
        torch.testing.assert_close(fn(x, flip=flip), fn(x, "ref", flip), rtol=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(fn, (x,)) and torch.autograd.gradgradcheck(fn, (x,))
    for dtype, tol in [(torch.float16, 3e-3), (torch.bfloat16, 2e-2)]:
        xl = x.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        y = fn(xl)
        assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y.double(), fn(xl.double(), "ref"), rtol=tol, atol=tol * 4)
