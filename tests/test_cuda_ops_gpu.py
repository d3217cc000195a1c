"""The fused CUDA kernels against the reference: forward, backward and double backward, fp32/fp16/bf16,
contiguous and channels_last, over the shapes of the 256 px StyleGAN2. Skipped without CUDA.

The kernels are built in-process; without a detected toolkit, CUDA_HOME defaults to /usr/local/cuda.
"""

import os

import pytest
import torch

if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"  # read when torch.utils.cpp_extension is first imported

from cuda_ops import ACTIVATIONS, bias_act, downsample2d, filter2d, loader, setup_filter, upfirdn2d, upsample2d

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (rtol, atol) of the kernel against a float64 reference computed from the same (rounded) inputs
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
LAYOUTS = ["contiguous", "channels_last"]


def _layout(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t.contiguous()


def _close(got, want, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol * scale)


def _grads_to_second_order(fn, inputs, dy, weights):
    """y, first-order grads (create_graph) and second-order grads of sum(w * grad) w.r.t. inputs and dy."""
    y = fn(*inputs)
    dy = dy.clone().requires_grad_()
    g1 = torch.autograd.grad(y, inputs, dy, create_graph=True)
    loss = sum((g * w).sum() for g, w in zip(g1, weights, strict=True))
    g2 = torch.autograd.grad(loss, [*inputs, dy], allow_unused=True)
    return y, g1, g2


def _compare_fn(fn_cuda, fn_ref, inputs, dtype, layout_check=None, second_order=True, scale=1.0):
    """Run the kernel path in `dtype` and the reference in float64 on the same values; compare everything."""
    low = [t.detach().to(dtype).requires_grad_(t.requires_grad) for t in inputs]
    ref = [t.detach().to(dtype).double().requires_grad_(t.requires_grad) for t in inputs]
    if layout_check is not None:
        low[0] = _layout(low[0].detach(), layout_check).requires_grad_()
    y_probe = fn_cuda(*low)
    g = torch.Generator(device="cuda").manual_seed(7)
    dy = torch.randn(y_probe.shape, device="cuda", generator=g).to(dtype)
    weights = [torch.randn(t.shape, device="cuda", generator=g).to(dtype) for t in low]
    if layout_check == "channels_last":
        assert y_probe.is_contiguous(memory_format=torch.channels_last)
    if second_order:
        y, g1, g2 = _grads_to_second_order(fn_cuda, low, dy, weights)
        yr, g1r, g2r = _grads_to_second_order(fn_ref, ref, dy.double(), [w.double() for w in weights])
    else:
        y = fn_cuda(*low)
        g1, g2 = torch.autograd.grad(y, low, dy), ()
        yr = fn_ref(*ref)
        g1r, g2r = torch.autograd.grad(yr, ref, dy.double()), ()
    _close(y, yr, dtype, scale)
    for a, b in zip(g1, g1r, strict=True):
        _close(a, b, dtype, scale * max(1.0, b.abs().max().item()))
    for a, b in zip(g2, g2r, strict=True):
        if b is None:
            assert a is None or a.abs().max() == 0
        elif a is None:
            assert b.abs().max() == 0
        else:  # autograd sums the incoming low-precision gradients before the kernel sees them
            low_precision = 4.0 if dtype in (torch.float16, torch.bfloat16) else 1.0
            _close(a, b, dtype, low_precision * scale * max(1.0, b.abs().max().item()))


@pytest.fixture(autouse=True)
def _kernels_must_build():
    assert loader.load_extension(required=True) is not None


# ---------------------------------------------------------------- bias_act


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_bias_act_matches_reference(act, dtype, layout, clamp):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(3, 16, 9, 7, device="cuda", generator=g) * 2
    b = torch.randn(16, device="cuda", generator=g).requires_grad_()
    x.requires_grad_()
    _compare_fn(
        lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl="cuda"),
        lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl="ref"),
        [x, b],
        dtype,
        layout,
    )


@pytest.mark.parametrize("act", ["lrelu", "swish", "linear"])
def test_bias_act_other_dims_and_no_bias(act):
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(5, 6, 7, device="cuda", generator=g, requires_grad=True)
    for dim in (0, 1, 2, -1):
        b = torch.randn(x.shape[dim], device="cuda", generator=g, requires_grad=True)
        _compare_fn(
            lambda x, b: bias_act(x, b, dim=dim, act=act, alpha=0.3, gain=1.3, impl="cuda"),
            lambda x, b: bias_act(x, b, dim=dim, act=act, alpha=0.3, gain=1.3, impl="ref"),
            [x, b],
            torch.float32,
        )
    _compare_fn(
        lambda x: bias_act(x, act=act, impl="cuda"), lambda x: bias_act(x, act=act, impl="ref"), [x], torch.float32
    )
    # 2-D input (the mapping network), a non-dense view, and negative gain / alpha (no output reuse)
    x2 = torch.randn(8, 40, device="cuda", generator=g, requires_grad=True)
    b2 = torch.randn(20, device="cuda", generator=g, requires_grad=True)
    _compare_fn(
        lambda x, b: bias_act(x[:, ::2], b, act=act, alpha=-0.5, gain=-2.0, impl="cuda"),
        lambda x, b: bias_act(x[:, ::2], b, act=act, alpha=-0.5, gain=-2.0, impl="ref"),
        [x2, b2],
        torch.float32,
    )


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_kernel_gradcheck_and_gradgradcheck(act):
    g = torch.Generator(device="cuda").manual_seed(2)
    # away from the kinks at 0 and from the clamp boundary
    sign = torch.randint(0, 2, (2, 3, 2, 3), device="cuda", generator=g) * 2 - 1
    x = (sign * (torch.rand(2, 3, 2, 3, device="cuda", generator=g, dtype=torch.float64) + 0.1)).requires_grad_()
    b = (torch.randn(3, device="cuda", generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    clamp = 0.8 if act in ("linear", "tanh", "sigmoid") else None

    def fn(x, b):
        return bias_act(x, b, act=act, clamp=clamp, impl="cuda")

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


# ---------------------------------------------------------------- upfirdn2d

CONFIGS = [  # up, down, padding, filter
    ((1, 1), (1, 1), (1, 2, 1, 2), [1, 3, 3, 1]),
    ((2, 2), (1, 1), (2, 1, 2, 1), [1, 3, 3, 1]),
    ((1, 1), (2, 2), (1, 1, 1, 1), [1, 3, 3, 1]),
    ((2, 1), (1, 3), (3, -1, 0, 2), [1, 2, 3]),
    ((3, 2), (2, 1), (-1, 2, 1, 0), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]),
    ((1, 1), (1, 1), (0, 0, 0, 0), None),
    ((4, 4), (4, 4), (5, 6, 5, 6), [1, 5, 10, 10, 5, 1]),
]


@pytest.mark.parametrize("up,down,pad,f", CONFIGS)
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_kernel_gradcheck_and_gradgradcheck(up, down, pad, f, flip_filter):
    x = torch.randn(2, 3, 5, 6, device="cuda", dtype=torch.float64, requires_grad=True)
    ft = None if f is None else torch.as_tensor(f, dtype=torch.float32, device="cuda")
    ft = None if ft is None else ft / ft.sum()

    def fn(x):
        return upfirdn2d(x, ft, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=1.5, impl="cuda")

    want = upfirdn2d(x, ft, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=1.5, impl="ref")
    torch.testing.assert_close(fn(x), want, rtol=1e-6, atol=1e-6)  # float32 filter taps in the kernel
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    # third order (any-order differentiable)
    (g1,) = torch.autograd.grad(fn(x).square().sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.square().sum(), x, create_graph=True)
    (g3,) = torch.autograd.grad(g2.sum(), x)
    xr = x.detach().requires_grad_()
    fr = lambda x: upfirdn2d(x, ft, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=1.5, impl="ref")  # noqa: E731
    (r1,) = torch.autograd.grad(fr(xr).square().sum(), xr, create_graph=True)
    (r2,) = torch.autograd.grad(r1.square().sum(), xr, create_graph=True)
    (r3,) = torch.autograd.grad(r2.sum(), xr)
    torch.testing.assert_close(g3, r3, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up,down,pad,f", CONFIGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_upfirdn2d_matches_reference(up, down, pad, f, dtype, layout):
    x = torch.randn(2, 8, 11, 9, device="cuda", requires_grad=True)
    ft = None if f is None else torch.as_tensor(f, dtype=torch.float32, device="cuda")
    ft = None if ft is None else ft / ft.sum()
    _compare_fn(
        lambda x: upfirdn2d(x, ft, up=up, down=down, padding=pad, gain=2.0, impl="cuda"),
        lambda x: upfirdn2d(x, ft, up=up, down=down, padding=pad, gain=2.0, impl="ref"),
        [x],
        dtype,
        layout,
        scale=4.0,
    )


def test_upfirdn2d_non_dense_input_and_expanded_gradient():
    base = torch.randn(2, 6, 10, 12, device="cuda", requires_grad=True)
    f = setup_filter([1, 3, 3, 1], device="cuda")
    _compare_fn(
        lambda x: upfirdn2d(x[:, ::2, :, 1:], f, down=2, padding=1, impl="cuda"),
        lambda x: upfirdn2d(x[:, ::2, :, 1:], f, down=2, padding=1, impl="ref"),
        [base],
        torch.float32,
    )
    # y.sum().backward() feeds an expanded (stride-0) gradient to the kernel
    x = torch.randn(1, 3, 8, 8, device="cuda", requires_grad=True)
    upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="cuda").sum().backward()
    xr = x.detach().requires_grad_()
    upfirdn2d(xr, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="ref").sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)


# ---------------------------------------------------------------- 256 px StyleGAN2 shapes


def _channels(res):  # config-f: channel_base 32768, channel_max 512
    return min(32768 // res, 512)


STYLEGAN_RES = [8, 16, 32, 64, 128, 256]


@pytest.mark.parametrize("res", STYLEGAN_RES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_stylegan2_256_shapes(res, dtype, layout):
    g = torch.Generator(device="cuda").manual_seed(res)
    c, batch = _channels(res), 2
    f = setup_filter([1, 3, 3, 1], device="cuda")
    clamp = 256.0 if dtype == torch.float16 else None
    x = torch.randn(batch, c, res, res, device="cuda", generator=g, requires_grad=True)
    b = torch.randn(c, device="cuda", generator=g, requires_grad=True)
    # synthesis/discriminator layers: bias + lrelu (+ clamp), and the ToRGB linear bias
    _compare_fn(
        lambda x, b: bias_act(x, b, act="lrelu", clamp=clamp, impl="cuda"),
        lambda x, b: bias_act(x, b, act="lrelu", clamp=clamp, impl="ref"),
        [x, b],
        dtype,
        layout,
    )
    # up-conv: FIR after the stride-2 transposed conv ([B, C, 2r+1, 2r+1] -> [B, C, 2r, 2r])
    xt = torch.randn(batch, c, 2 * res + 1, 2 * res + 1, device="cuda", generator=g, requires_grad=True)
    _compare_fn(
        lambda x: upfirdn2d(x, f, padding=1, gain=4, impl="cuda"),
        lambda x: upfirdn2d(x, f, padding=1, gain=4, impl="ref"),
        [xt],
        dtype,
        layout,
        scale=4.0,
    )
    # skip image upsampling (3 channels) and the discriminator's filter before the strided conv / 2x down
    img = torch.randn(batch, 3, res // 2, res // 2, device="cuda", generator=g, requires_grad=True)
    _compare_fn(
        lambda x: upsample2d(x, f, impl="cuda"), lambda x: upsample2d(x, f, impl="ref"), [img], dtype, layout, scale=4.0
    )
    _compare_fn(
        lambda x: filter2d(x, f, padding=1, impl="cuda"),
        lambda x: filter2d(x, f, padding=1, impl="ref"),
        [x],
        dtype,
        layout,
    )
    _compare_fn(lambda x: downsample2d(x, f, impl="cuda"), lambda x: downsample2d(x, f, impl="ref"), [x], dtype, layout)


def test_stylegan2_generator_and_discriminator_match_reference():
    models = pytest.importorskip("pbw.models.stylegan2")
    torch.manual_seed(0)
    G = models.StyleGAN2Generator(resolution=64, channel_base=2048, channel_max=64).cuda()
    D = models.StyleGAN2Discriminator(resolution=64, channel_base=2048, channel_max=64).cuda()
    z = torch.randn(4, G.z_dim, device="cuda")
    results = {}
    for mode in ("cuda", "ref"):
        loader.set_mode(mode)
        try:
            G.zero_grad(set_to_none=True)
            D.zero_grad(set_to_none=True)
            img = G(z, noise_mode="const")
            img_d = img.detach().requires_grad_()
            logits = D(img_d)
            (r1,) = torch.autograd.grad(logits.sum(), img_d, create_graph=True)  # R1 needs the double backward
            (logits.sum() + r1.square().sum() + D(img).sum()).backward()
            results[mode] = [img.detach(), logits.detach()] + [
                p.grad.clone() for p in [*G.parameters(), *D.parameters()] if p.grad is not None
            ]
        finally:
            loader.set_mode(None)
    assert len(results["cuda"]) == len(results["ref"])
    for a, b in zip(results["cuda"], results["ref"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))
