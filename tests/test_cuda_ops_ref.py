"""The reference ops against naive definitions, conv2d/conv_transpose2d formulations and gradcheck."""

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from cuda_ops import ACTIVATIONS, bias_act, downsample2d, filter2d, loader, setup_filter, upfirdn2d, upsample2d
from cuda_ops.bias_act import KERNEL_MIN_NUMEL, bias_act_ref
from cuda_ops.upfirdn2d import _correlation_kernel, _grad_padding, upfirdn2d_ref

NAIVE_ACT = {
    "linear": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "lrelu": lambda v, a=0.2: np.where(v > 0, v, a * v),
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "elu": lambda v: np.where(v > 0, v, np.exp(v) - 1),
    "selu": lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * (np.exp(v) - 1)),
    "softplus": lambda v: np.log1p(np.exp(v)),
    "swish": lambda v: v / (1 + np.exp(-v)),
}


def naive_upfirdn2d(x, f, up, down, pad, flip_filter=False, gain=1.0):
    """Straight from the definition, with numpy/scipy: zero insertion, pad/crop, true 2-D convolution, stride."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    f = np.atleast_1d(np.asarray(f, dtype=np.float64))
    f2 = np.outer(f, f) if f.ndim == 1 else f
    if flip_filter:
        f2 = f2[::-1, ::-1]
    n, c, h, w = x.shape
    out = []
    for img in x.reshape(n * c, h, w):
        u = np.zeros((h * upy, w * upx))
        u[::upy, ::upx] = img
        u = np.pad(u, ((max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
        u = u[max(-py0, 0) : u.shape[0] - max(-py1, 0), max(-px0, 0) : u.shape[1] - max(-px1, 0)]
        z = scipy.signal.convolve2d(u, f2, mode="valid") * gain
        out.append(z[::downy, ::downx])
    return np.stack(out).reshape(n, c, *out[0].shape)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_matches_naive_definition(act):
    g = torch.Generator().manual_seed(0)
    x, b = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    spec = ACTIVATIONS[act]
    want = NAIVE_ACT[act]((x + b[None, :, None, None]).numpy()) * spec.default_gain
    torch.testing.assert_close(bias_act(x, b, act=act), torch.from_numpy(want))
    # explicit gain, clamp, bias along another dim
    want = np.clip(NAIVE_ACT[act]((x + b[None, :, None, None]).numpy()) * 3.0, -0.5, 0.5)
    torch.testing.assert_close(bias_act(x, b, act=act, gain=3.0, clamp=0.5), torch.from_numpy(want))
    b3 = torch.randn(4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(
        bias_act(x, b3, dim=3, act=act, gain=1.0), torch.from_numpy(NAIVE_ACT[act]((x + b3).numpy()))
    )
    torch.testing.assert_close(bias_act(x, b3, dim=-1, act=act, gain=1.0), bias_act(x, b3, dim=3, act=act, gain=1.0))


def test_bias_act_lrelu_alpha_and_errors():
    x = torch.tensor([[-2.0, 3.0]])
    torch.testing.assert_close(bias_act(x, act="lrelu", alpha=0.5, gain=1.0), torch.tensor([[-1.0, 3.0]]))
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, act="gelu2")
    with pytest.raises(ValueError, match="does not match"):
        bias_act(x, torch.zeros(3))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_ref_gradcheck_and_gradgradcheck(act):
    g = torch.Generator().manual_seed(1)
    # keep away from the kinks at 0 and the clamp boundary, where finite differences are meaningless
    x = (torch.rand(2, 3, 2, 2, generator=g, dtype=torch.float64) + 0.1) * torch.randint(
        0, 2, (2, 3, 2, 2), generator=g
    ) * 2 - 1.1
    x = x.requires_grad_()
    b = (torch.randn(3, generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    clamp = 0.8 if act in ("linear", "tanh") else None

    def fn(x, b):
        return bias_act_ref(x, b, act=act, clamp=clamp)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


CONFIGS = [  # up, down, padding, filter
    ((1, 1), (1, 1), (1, 2, 1, 2), [1, 3, 3, 1]),
    ((2, 2), (1, 1), (2, 1, 2, 1), [1, 3, 3, 1]),
    ((1, 1), (2, 2), (1, 1, 1, 1), [1, 3, 3, 1]),
    ((2, 1), (1, 3), (3, -1, 0, 2), [1, 2, 3]),
    ((3, 2), (2, 1), (-1, 2, 1, 0), np.arange(1, 13).reshape(3, 4) / 78.0),
    ((1, 1), (1, 1), (0, 0, 0, 0), None),
]


@pytest.mark.parametrize("up,down,pad,f", CONFIGS)
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_matches_naive_definition(up, down, pad, f, flip_filter):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ft = None if f is None else torch.as_tensor(f, dtype=torch.float64)
    got = upfirdn2d(x, ft, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=1.5)
    want = naive_upfirdn2d(x.numpy(), 1.0 if f is None else f, up, down, pad, flip_filter, 1.5)
    assert got.shape == want.shape
    torch.testing.assert_close(got, torch.from_numpy(want))


def test_upfirdn2d_matches_conv_formulations():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, generator=g)
    f2 = torch.rand(4, 4, dtype=torch.float64, generator=g)
    w = f2[None, None].expand(4, 1, 4, 4)
    # 2x upsampling == transposed conv with stride 2 (a true convolution of the zero-inserted signal)
    torch.testing.assert_close(upsample2d(x, f2), F.conv_transpose2d(x, w * 4, stride=2, padding=1, groups=4))
    # 2x downsampling == strided correlation with the flipped filter
    torch.testing.assert_close(downsample2d(x, f2), F.conv2d(x, w.flip([2, 3]), stride=2, padding=1, groups=4))
    # same-size filtering == padded correlation with the flipped filter
    torch.testing.assert_close(filter2d(x, f2), F.conv2d(F.pad(x, [2, 1, 2, 1]), w.flip([2, 3]), groups=4))
    # a separable filter == its 2-D outer product
    f1 = setup_filter([1, 3, 3, 1]).double()
    torch.testing.assert_close(upsample2d(x, f1), upsample2d(x, torch.outer(f1, f1)))
    assert upsample2d(x, f1).shape == (2, 4, 14, 14) and downsample2d(x, f1).shape == (2, 4, 3, 3)
    # a low-pass filter keeps a constant image constant (away from the borders)
    ones = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(upsample2d(ones, f1)[..., 3:-3, 3:-3], torch.ones(1, 1, 10, 10, dtype=torch.float64))
    torch.testing.assert_close(downsample2d(ones, f1)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2, dtype=torch.float64))


def test_setup_filter_normalizes():
    f = setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4,)
    torch.testing.assert_close(torch.outer(f, f).sum(), torch.tensor(1.0))
    f2 = setup_filter([1, 2, 1], separable=False)
    assert f2.shape == (3, 3) and math.isclose(f2.sum().item(), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("up,down,pad,f", CONFIGS[:5])
def test_upfirdn2d_ref_gradcheck_and_gradgradcheck(up, down, pad, f):
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    ft = torch.as_tensor(f, dtype=torch.float64)

    def fn(x):
        return upfirdn2d_ref(x, ft, up=up, down=down, padding=pad, gain=2.0)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("up,down,pad,f", CONFIGS)
def test_upfirdn2d_gradient_is_the_swapped_upfirdn2d(up, down, pad, f):
    """The formula the CUDA backward uses (flipped kernel, up/down swapped, `_grad_padding`), checked
    against autograd through the reference."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    ft = None if f is None else torch.as_tensor(f, dtype=torch.float64)
    y = upfirdn2d_ref(x, ft, up=up, down=down, padding=pad, gain=1.7)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    (want,) = torch.autograd.grad(y, x, dy)
    k = _correlation_kernel(ft, False, 1.7, x.device, torch.float64)
    gpad = _grad_padding(x.shape, y.shape, k.shape, up, down, pad)
    got = upfirdn2d_ref(dy, k.flip([0, 1]), up=down, down=up, padding=gpad, flip_filter=True)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want)


def test_auto_runs_the_fused_bias_act_only_where_it_beats_the_reference(monkeypatch):
    """`auto` leaves plain bias adds and tensors below KERNEL_MIN_NUMEL to the reference; `cuda` always fuses."""
    calls = []

    class Kernels:  # stands in for the built extension: records the calls, computes what the kernel would
        @staticmethod
        def bias_act(x, b, dy, grad, dim, act_id, alpha, gain, clamp):
            calls.append(x.numel())
            return bias_act_ref(x, b, dim=dim, act="lrelu", alpha=alpha, gain=gain)

    monkeypatch.setattr(loader, "_module", Kernels)
    monkeypatch.setattr(loader, "_tried", True)
    monkeypatch.setattr(loader, "KERNEL_DEVICE_TYPES", ("cpu",))
    n = KERNEL_MIN_NUMEL
    small, large = torch.randn(1, 4, n // 8 - 1, 2), torch.randn(1, 4, n // 8, 2)
    bias_act(small, torch.zeros(4), act="lrelu", impl="auto")
    bias_act(large, torch.zeros(4), act="linear", impl="auto")  # toRGB: the reference is one add
    assert calls == []
    bias_act(large, torch.zeros(4), act="lrelu", impl="auto")
    bias_act(small, torch.zeros(4), act="lrelu", impl="cuda")
    assert calls == [n, n - 8]
