"""Upsample, pad, FIR-filter and downsample 2-D images in one op (`upfirdn2d`) and its helpers.

Filters are 1-D (separable, applied along x then y) or 2-D. As in signal processing, the filter is
applied as a true convolution (flipped); `flip_filter=True` applies it as a correlation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import loader

IntPair = int | Sequence[int]
Padding = int | Sequence[int]


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    """(x, y) from an int or a pair."""
    if isinstance(v, int):
        v = (v, v)
    vx, vy = (int(e) for e in v)
    if vx < 1 or vy < 1:
        raise ValueError(f"{name} factors must be >= 1, got {v}")
    return vx, vy


def _padding4(padding: Padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, an (x, y) pair or four values."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return tuple(padding)  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, (x, y) or (x0, x1, y0, y1); got {padding}")


def setup_filter(
    f: Sequence[float] | torch.Tensor = (1, 3, 3, 1),
    normalize: bool = True,
    separable: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """A float32 FIR filter tensor: 1-D (separable) or, with `separable=False`, its 2-D outer product.

    With `normalize`, the filter's total (2-D) gain is 1.
    """
    f = torch.as_tensor(f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"a filter must be 1-D or 2-D and non-empty, got shape {tuple(f.shape)}")
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a 1-D or 2-D filter."""
    if f is None:
        return 1, 1
    return (f.shape[-1], f.shape[-1]) if f.ndim == 1 else (f.shape[1], f.shape[0])


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Reference PyTorch implementation of :func:`upfirdn2d`; differentiable to any order."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    n, c, h, w = x.shape

    if upx > 1 or upy > 1:  # zero insertion
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    if f is None:
        return x[:, :, ::downy, ::downx] * gain if gain != 1 else x[:, :, ::downy, ::downx]
    f = f.to(device=x.device, dtype=x.dtype)
    if not flip_filter:  # conv2d correlates; flip for a true convolution
        f = f.flip(list(range(f.ndim)))
    c = x.shape[1]
    if f.ndim == 2:
        weight = (f * gain)[None, None].expand(c, 1, *f.shape)
        return F.conv2d(x, weight, stride=(downy, downx), groups=c)
    g = gain**0.5
    wx = (f * g)[None, None, None, :].expand(c, 1, 1, f.shape[0])
    wy = (f * g)[None, None, :, None].expand(c, 1, f.shape[0], 1)
    x = F.conv2d(x, wx, stride=(1, downx), groups=c)
    return F.conv2d(x, wy, stride=(downy, 1), groups=c)


class _UpFirDn2dCuda(torch.autograd.Function):
    """The fused kernel with a float32 correlation kernel `k` (flip and gain folded in).

    Its gradient is the same op on dy with the flipped kernel, up/down swapped and the padding
    adjusted, so it is differentiable to any order.
    """

    @staticmethod
    def forward(ctx, x, k, up, down, pad):
        (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
        y = loader.load_extension().upfirdn2d(x, k, upx, upy, downx, downy, px0, px1, py0, py1)
        ctx.save_for_backward(k)
        ctx.cfg = (x.shape, up, down, pad)
        return y

    @staticmethod
    def backward(ctx, dy):
        (k,), (xshape, up, down, pad) = ctx.saved_tensors, ctx.cfg
        dx = None
        if ctx.needs_input_grad[0]:
            gpad = _grad_padding(xshape, dy.shape, k.shape, up, down, pad)
            dx = _UpFirDn2dCuda.apply(dy, k.flip([0, 1]).contiguous(), down, up, gpad)
        return dx, None, None, None, None


def _grad_padding(
    xshape: Sequence[int],
    yshape: Sequence[int],
    kshape: Sequence[int],
    up: tuple[int, int],
    down: tuple[int, int],
    pad: tuple[int, int, int, int],
) -> tuple[int, int, int, int]:
    """Padding of the upfirdn2d (flipped kernel, up and down swapped) that maps dy back onto x's grid."""
    (upx, upy), (downx, downy), (px0, _, py0, _) = up, down, pad
    kh, kw = kshape
    h, w, oh, ow = xshape[2], xshape[3], yshape[2], yshape[3]
    return (kw - px0 - 1, w * upx - ow * downx + px0 - upx + 1, kh - py0 - 1, h * upy - oh * downy + py0 - upy + 1)


def _correlation_kernel(
    f: torch.Tensor | None, flip_filter: bool, gain: float, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The 2-D kernel that the fused op correlates with (float32 there): outer product of a 1-D
    filter, flipped for a true convolution, times `gain`."""
    if f is None:
        return torch.full((1, 1), float(gain), dtype=dtype, device=device)
    f = f.to(device=device, dtype=dtype)
    if f.ndim == 1:
        f = torch.outer(f, f)
    if not flip_filter:
        f = f.flip([0, 1])
    return (f * gain).contiguous()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str | None = None,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative values crop), FIR-filter, then downsample.

    x: [N, C, H, W]. f: 1-D (separable) or 2-D filter, or None (identity).
    up/down: int or (x, y) factors. padding: int, (x, y) or (x0, x1, y0, y1), applied after upsampling.
    gain: overall gain of the filter (e.g. up**2 to keep the signal level when upsampling).
    Output size: ((H * up_y + py0 + py1 - fh) // down_y + 1, likewise for W).
    Differentiable to any order (not with respect to `f`). `impl` ('auto', 'ref', 'cuda')
    overrides the `PBW_CUDA_OPS` mode for this call.
    """
    if x.ndim == 4 and loader.use_kernel(x, impl):
        if f is not None and (f.ndim not in (1, 2) or f.numel() == 0):
            raise ValueError(f"a filter must be 1-D or 2-D and non-empty, got shape {tuple(f.shape)}")
        k = _correlation_kernel(f, flip_filter, gain, x.device)
        return _UpFirDn2dCuda.apply(x, k, _pair(up, "up"), _pair(down, "down"), _padding4(padding))
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str | None = None,
) -> torch.Tensor:
    """FIR-filter `x`, keeping its size (plus `padding`)."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str | None = None,
) -> torch.Tensor:
    """Upsample `x` by `up` with the FIR filter `f` (output = input size * up, plus `padding`)."""
    upx, upy = _pair(up, "up")
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor,
    down: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str | None = None,
) -> torch.Tensor:
    """Downsample `x` by `down` with the FIR filter `f` (output = input size / down, plus `padding`)."""
    downx, downy = _pair(down, "down")
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
