"""Bias add + activation + gain + clamp (`bias_act`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import loader


@dataclass(frozen=True)
class Activation:
    """An activation with its default slope parameter and the gain that keeps unit variance."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float
    default_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}
# The kernel's activation ids (`enum Act` in bias_act.cu); activations missing here use the reference.
_ACT_IDS = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6, "softplus": 7, "swish": 8}


def _resolve(act: str, alpha: float | None, gain: float | None) -> tuple[Activation, float, float]:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = spec.default_alpha if alpha is None else float(alpha)
    gain = spec.default_gain if gain is None else float(gain)
    return spec, alpha, gain


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Reference PyTorch implementation of :func:`bias_act`; differentiable to any order."""
    spec, alpha, gain = _resolve(act, alpha, gain)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match x.shape[{dim}]={x.shape[dim]}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]).to(x.dtype)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# Activations whose derivative depends only on the sign of the pre-activation, so the backward
# can read it from the output instead of keeping the input (when gain > 0 and nothing is clamped).
_SIGN_ONLY = {"linear", "relu", "lrelu"}


def _reduce_dims(ndim: int, dim: int) -> list[int]:
    return [i for i in range(ndim) if i != dim]


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`t` with `ref`'s strides (the kernel walks all its tensors in `ref`'s memory order)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


class _BiasActCuda(torch.autograd.Function):
    """y = kernel(x, b); backward through :class:`_BiasActGradCuda` (so it is differentiable once more)."""

    @staticmethod
    def forward(ctx, x, b, dim, act_id, alpha, gain, clamp, keep_output):
        y = loader.load_extension().bias_act(x, b, None, 0, dim, act_id, alpha, gain, clamp)
        ctx.cfg = (dim, act_id, alpha, gain, clamp)
        ctx.keep_output = keep_output
        ctx.save_for_backward(*((y,) if keep_output else (x, b)))
        return y

    @staticmethod
    def backward(ctx, dy):
        dim, act_id, alpha, gain, clamp = ctx.cfg
        if ctx.keep_output:  # sign-only activation: act'(y) == act'(x + b)
            (ref,), b = ctx.saved_tensors, None
        else:
            ref, b = ctx.saved_tensors
        dx = _BiasActGradCuda.apply(_like(dy, ref), ref, b, dim, act_id, alpha, gain, clamp, ctx.keep_output)
        db = dx.sum(_reduce_dims(dx.ndim, dim)) if ctx.needs_input_grad[1] else None
        return dx, db, None, None, None, None, None, None


class _BiasActGradCuda(torch.autograd.Function):
    """dx = dy * gain * act'(x + b) * clamp mask; its own backward uses the act'' kernel."""

    @staticmethod
    def forward(ctx, dy, ref, b, dim, act_id, alpha, gain, clamp, ref_is_output):
        ctx.cfg = (dim, act_id, alpha, gain, clamp)
        ctx.ref_is_output = ref_is_output
        ctx.save_for_backward(dy, ref, b)
        return loader.load_extension().bias_act(ref, b, dy, 1, dim, act_id, alpha, gain, clamp)

    @staticmethod
    @once_differentiable
    def backward(ctx, ddx):
        dim, act_id, alpha, gain, clamp = ctx.cfg
        dy, ref, b = ctx.saved_tensors
        ddx = _like(ddx, ref)
        kernel = loader.load_extension().bias_act
        d_dy = kernel(ref, b, ddx, 1, dim, act_id, alpha, gain, clamp) if ctx.needs_input_grad[0] else None
        d_ref = d_b = None
        # act' is piecewise constant for the sign-only activations: no gradient reaches x (or y) then.
        if not ctx.ref_is_output and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_ref = kernel(ref, b, ddx * dy, 2, dim, act_id, alpha, gain, clamp)
            if ctx.needs_input_grad[2]:
                d_b = d_ref.sum(_reduce_dims(d_ref.ndim, dim))
        return d_dy, d_ref, d_b, None, None, None, None, None, None


# Where `auto` leaves the fused kernel for the reference. Measured with benchmarks/ops.py on one H200 (fp32,
# batch 8, 256 px config-f): the toRGB calls (linear, gain 1, no clamp, where the reference is a single
# elementwise add) ran at 0.46-0.88x of the reference at every size (384 to 1.6M elements), while no lrelu call
# (65,536 elements and up) lost. So a plain bias add always takes the reference, and anything smaller than the
# smallest size measured not to lose does too. Both must be re-measured with `python benchmarks/ops.py` on the
# GPU at hand (its `auto` column must never be slower than `ref`).
KERNEL_MIN_NUMEL = 65_536


def kernel_pays_off(x: torch.Tensor, act: str, gain: float, clamp: float | None) -> bool:
    """Whether `auto` runs the fused kernel for this call (see KERNEL_MIN_NUMEL)."""
    plain_bias_add = act == "linear" and gain == 1 and (clamp is None or clamp < 0)
    return not plain_bias_add and x.numel() >= KERNEL_MIN_NUMEL


def _bias_act_cuda(x, b, dim, act, alpha, gain, clamp):
    if not (x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last))):
        x = x.contiguous()  # the kernel walks x in memory order: it must be dense
    if b is not None:
        b = b.to(x.dtype).contiguous()
    clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
    keep_output = act in _SIGN_ONLY and clamp < 0 and gain > 0 and alpha >= 0
    return _BiasActCuda.apply(x, b, dim, _ACT_IDS[act], alpha, gain, clamp, keep_output)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """Add bias `b` along `dim`, apply activation `act` (slope `alpha`), scale by `gain`, clamp to ±`clamp`.

    `gain=None` uses the activation's variance-preserving default (sqrt(2) for relu/lrelu/swish).
    Differentiable twice with the fused CUDA kernel, to any order with the reference.
    `impl` ('auto', 'ref', 'cuda') overrides the `PBW_CUDA_OPS` mode for this call; `auto` runs the kernel
    only where it is faster than the reference (`kernel_pays_off`), `cuda` always.
    """
    dim = dim % x.ndim if x.ndim else dim
    if act in _ACT_IDS and loader.use_kernel(x, impl):
        _, alpha, gain = _resolve(act, alpha, gain)
        mode = loader.get_mode() if impl is None else impl.strip().lower()
        if mode == "auto" and not kernel_pays_off(x, act, gain, clamp):
            return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
        if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match x.shape[{dim}]={x.shape[dim]}")
        return _bias_act_cuda(x, b, dim, act, alpha, gain, clamp)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
