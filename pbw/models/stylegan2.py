"""StyleGAN2 (Karras et al., 2020), config-f architecture, as plain nn.Modules.

Module and parameter names follow the official implementation (mapping.fc0, synthesis.b64.conv0,
b4.const, torgb, affine, noise_strength, discriminator b4.mbstd/conv/fc/out, ...) so published
weights map onto it one to one (the up-conv kernels flipped: see :mod:`pbw.checkpoints.nvidia`).
Every layer uses the equalized learning rate (weights stored N(0, 1) / lr_multiplier, scaled at
run time).

The generator is a :class:`~pbw.models.maskable.MaskableGenerator`: ``encode`` is the mapping
network (W+ latents, one w per layer) and ``decode`` the synthesis network, in which a mask blends
the modulation styles of the edited latent and the frozen one at every modulated conv.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cuda_ops import ACTIVATIONS, bias_act, setup_filter, upfirdn2d, upsample2d
from pbw.models.maskable import Codes, MaskableGenerator, paint_regions, resize_mask

RESAMPLE_FILTER = (1, 3, 3, 1)


def check_resolution(resolution: int) -> int:
    """Return `resolution` if it is a power of two in 32..1024, else raise a clear error."""
    if not isinstance(resolution, int) or resolution < 32 or resolution > 1024 or resolution & (resolution - 1):
        raise ValueError(f"StyleGAN2 resolution must be a power of two between 32 and 1024, got {resolution!r}")
    return resolution


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: channel_base / resolution, capped at channel_max."""
    return min(channel_base // resolution, channel_max)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of x to unit root-mean-square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalized learning rate and a fused bias + activation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(nn.Module):
    """z -> w: 2nd-moment normalization then `num_layers` lrelu dense layers; tracks the mean w."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(
                self,
                f"fc{i}",
                FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier),
            )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        """W+ latents [B, num_ws, w_dim]. `truncation_psi` < 1 pulls w toward the tracked mean."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):  # float32 under autocast (see ARCHITECTURE.md)
            x = normalize_2nd_moment(z.float())
            for i in range(self.num_layers):
                x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


def _blur_mask(mask: torch.Tensor, passes: int) -> torch.Tensor:
    """Soften a mask with `passes` separable binomial [1,4,6,4,1]/16 blurs (edge-replicated).

    The filter's taps are dyadic, so a constant mask (all 0 or all 1) stays exactly constant.
    """
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=mask.device, dtype=mask.dtype) / 16
    for _ in range(passes):
        mask = F.conv2d(F.pad(mask, [2, 2, 0, 0], mode="replicate"), taps.view(1, 1, 1, 5))
        mask = F.conv2d(F.pad(mask, [0, 0, 2, 2], mode="replicate"), taps.view(1, 1, 5, 1))
    return mask


def mask_at(mask: torch.Tensor, size: int) -> torch.Tensor:
    """The edit mask (one channel per region) as seen by a layer of resolution `size`: resized, and
    blurred from 64 px up."""
    m = resize_mask(mask, size)
    if size < 64:
        return m
    return _blur_mask(m.flatten(0, 1).unsqueeze(1), passes=size // 64).view_as(m)


class ModulatedConv(nn.Module):
    """A style-modulated conv (SynthesisLayer when `demodulate`, ToRGB otherwise).

    Modulation multiplies the input features by the per-channel style s(w), which is the same as
    scaling the weights but keeps one shared weight for the batch (a plain, fast conv) and lets the
    style vary over space: with a mask, s = s(w) * m + s(w0) * (1 - m). Demodulation (per output
    channel, from the style) is blended the same way at the output resolution (`demodulation="blend"`,
    so that an all-one mask equals decode(w) exactly), or taken from the frozen style s(w0) everywhere
    (`"frozen"`, as the paper's official code does). Several regions (w [B, K, w_dim], a K-channel
    mask): each region's style is painted over s(w0) in order (`paint_regions`), and so is its
    demodulation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        demodulate: bool = True,
        activation: str = "lrelu",
        use_noise: bool = True,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up, self.demodulate = resolution, up, demodulate
        self.activation, self.conv_clamp, self.use_noise = activation, conv_clamp, use_noise
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # ToRGB scales its styles by the weight gain; demodulated layers are normalized anyway.
        self.style_gain = 1.0 if demodulate else 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER), persistent=False)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        if self.up == 1:
            return F.conv2d(x, weight, padding=self.padding)
        # Transposed conv with the flipped kernel = zero insertion then the same correlation as conv2d,
        # followed by the FIR low-pass that removes the aliasing of the zero insertion.
        x = F.conv_transpose2d(x, weight.flip([2, 3]).transpose(0, 1), stride=self.up)
        k = weight.shape[-1]
        pad0 = self.padding + (4 + self.up - 1) // 2 - (k - 1)
        pad1 = self.padding + (4 - self.up) // 2 - (k - self.up)
        return upfirdn2d(x, self.resample_filter, padding=[pad0, pad1, pad0, pad1], gain=self.up**2)

    def _demod(self, styles: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-output-channel 1 / ||w * s||: [B, out_channels]."""
        with torch.autocast(styles.device.type, enabled=False):  # float32 under autocast
            w2 = self.weight.float().square().sum(dim=[2, 3])  # [out, in]
            return (styles.float().square() @ w2.t() + 1e-8).rsqrt()

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        w0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        noise_mode: str = "random",
        demodulation: str = "blend",
    ) -> torch.Tensor:
        fp32 = torch.autocast(x.device.type, enabled=False)  # styles and demodulation stay float32 under autocast
        regions = w.ndim == 3  # [B, K, w_dim]: one latent per mask channel
        with fp32:
            styles = self.affine((w.flatten(0, 1) if regions else w).float()) * self.style_gain

        def per_region(v):  # [B(*K), C] -> [B, C, 1, 1], or K of them
            return list(v.view(w.shape[0], w.shape[1], -1, 1, 1).unbind(1)) if regions else v[:, :, None, None]

        if mask is None:
            x = x * styles.to(x.dtype)[:, :, None, None]
        else:
            with fp32:
                styles0 = self.affine(w0.float()) * self.style_gain
            m_in = mask_at(mask, x.shape[-1]).to(x.dtype)
            x = x * paint_regions(per_region(styles), styles0[:, :, None, None], m_in).to(x.dtype)
        x = self._conv(x)
        if self.demodulate:
            if mask is None:
                d = self._demod(styles)[:, :, None, None]
            elif demodulation == "frozen":
                d = self._demod(styles0)[:, :, None, None]
            else:
                d = paint_regions(
                    per_region(self._demod(styles)), self._demod(styles0)[:, :, None, None], mask_at(mask, x.shape[-1])
                )
            x = x * d.to(x.dtype)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                # drawn in float32: older torch (2.2, 2.5) draws other numbers for a bfloat16 tensor, and
                # a bf16-mixed run must draw what an fp32 run draws
                noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device).to(x.dtype)
            elif noise_mode == "const":
                noise = self.noise_const.to(x.dtype)
            else:
                raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
            x = x + noise * self.noise_strength.to(x.dtype)
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const | up-conv) + conv, and a skip ToRGB."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int = 3,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.resolution, self.in_channels = resolution, in_channels
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = ModulatedConv(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = ModulatedConv(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ModulatedConv(
            out_channels,
            img_channels,
            w_dim,
            resolution,
            kernel_size=1,
            demodulate=False,
            activation="linear",
            use_noise=False,
            conv_clamp=conv_clamp,
        )
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x, img, ws, ws0=None, mask=None, noise_mode="random", demodulation="blend"):
        """ws: [B, num_conv + 1, w_dim] (the last one is ToRGB's), or [B, K, num_conv + 1, w_dim]."""

        def layer_args(i):  # ws: [B, layers, w_dim], or [B, K, layers, w_dim] for K regions
            return ws[..., i, :], (None if ws0 is None else ws0[:, i])

        kw = dict(mask=mask, noise_mode=noise_mode, demodulation=demodulation)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, *layer_args(0), **kw)
        else:
            x = self.conv0(x, *layer_args(0), **kw)
            x = self.conv1(x, *layer_args(1), **kw)
        y = self.torgb(x, *layer_args(self.num_conv), mask=mask).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ latents -> image, through blocks b4, b8, ..., b{resolution}."""

    def __init__(
        self,
        w_dim: int,
        resolution: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        img_channels: int = 3,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.block_resolutions = [2**i for i in range(2, int(np.log2(resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = 0 if res == 4 else channels_at(res // 2, channel_base, channel_max)
            block = SynthesisBlock(
                in_ch,
                channels_at(res, channel_base, channel_max),
                w_dim,
                res,
                img_channels=img_channels,
                conv_clamp=conv_clamp,
            )
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last ToRGB

    def forward(
        self,
        ws: torch.Tensor,
        ws0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        noise_mode: str = "random",
        demodulation: str = "blend",
    ) -> torch.Tensor:
        regions = ws.ndim == 4  # [B, K, num_ws, w_dim]: K regions, one per mask channel
        if ws.ndim not in (3, 4) or ws.shape[-2] != self.num_ws:
            raise ValueError(f"ws must have shape [B, {self.num_ws}, w_dim] (or [B, K, ...]), got {tuple(ws.shape)}")
        k = ws.shape[1] if regions else 1
        if regions and mask is None:
            raise ValueError("K region latents need a K-channel mask")
        if mask is not None:
            if ws0 is None:
                raise ValueError("a mask needs the frozen latent w0 to use outside it")
            if mask.ndim != 4 or mask.shape[1] != k or mask.shape[0] not in (1, ws.shape[0]):
                raise ValueError(f"mask must have shape [B or 1, {k}, H, W], got {tuple(mask.shape)}")
            mask = mask.to(device=ws.device, dtype=torch.float32).expand(ws.shape[0], -1, -1, -1)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            span = slice(w_idx, w_idx + block.num_conv + 1)
            x, img = block(
                x, img, ws[..., span, :], None if ws0 is None else ws0[:, span], mask, noise_mode, demodulation
            )
            w_idx += block.num_conv
        return img


class StyleGAN2Generator(MaskableGenerator):
    """StyleGAN2 generator: mapping network (z -> W+) and synthesis network (W+ -> image).

    Defaults are config-f: 512-d z and w, 8 mapping layers with lr multiplier 0.01, channel_base
    32768 and channel_max 512 (512 feature maps up to 64 px, then halving).

    Edit spaces: `w` (one w broadcast to every layer: the paper's masked edit), `wplus` (one w per
    layer) and `z` (through the mapping network: the paper's whole-image generation).
    `masked_demodulation`: how a masked decode demodulates (see `ModulatedConv`): "blend" or "frozen".
    """

    spaces = ("w", "wplus", "z")
    default_spaces = {"masked": "w", "whole": "z"}
    projection_spaces = ("w", "wplus")
    tuning_lr = 1e-3  # PTI's for StyleGAN2

    def __init__(
        self,
        resolution: int = 256,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        w_avg_beta: float = 0.995,
        truncation_psi: float = 1.0,
        img_channels: int = 3,
        masked_demodulation: str = "blend",
    ):
        super().__init__()
        if masked_demodulation not in ("blend", "frozen"):
            raise ValueError(f"masked_demodulation must be 'blend' or 'frozen', got {masked_demodulation!r}")
        self.z_dim, self.w_dim, self.img_channels = z_dim, w_dim, img_channels
        self.truncation_psi, self.masked_demodulation = truncation_psi, masked_demodulation
        self.synthesis = SynthesisNetwork(w_dim, resolution, channel_base, channel_max, img_channels, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_multiplier, w_avg_beta)

    @property
    def resolution(self) -> int:
        return self.synthesis.resolution

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "random") -> torch.Tensor:
        """Images in about [-1, 1] from z [B, z_dim]."""
        return self.synthesis(self.mapping(z, truncation_psi=truncation_psi), noise_mode=noise_mode)

    def sample(self, n: int, seed: int | None = None, **kwargs) -> Codes:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.z_dim, generator=gen)
        return {"z": z.to(self.mapping.w_avg.device)}

    def encode(self, codes: Codes) -> torch.Tensor:
        return self.mapping(codes["z"].to(self.mapping.w_avg.device), truncation_psi=self.truncation_psi)

    def decode(
        self,
        w: torch.Tensor,
        w0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cond: Codes | None = None,
    ) -> torch.Tensor:
        """W+ latents -> image with constant noise (`cond` is not needed: w holds everything); `w` may be
        a sequence of K region latents with a K-channel mask."""
        if not torch.is_tensor(w):
            w = torch.stack(list(w), 1) if len(w) > 1 else w[0]
        return self.synthesis(w, ws0=w0, mask=mask, noise_mode="const", demodulation=self.masked_demodulation)

    def decode_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.startswith("synthesis.")]

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
        device = self.mapping.w_avg.device
        z = torch.randn(n, self.z_dim, generator=generator).to(device)
        w = torch.cat([self.encode({"z": c})[:, 0] for c in z.split(1000)])
        w_avg = w.mean(0, keepdim=True)
        spread = float(((w - w_avg).square().sum() / len(w)).sqrt())  # NVIDIA's w_std
        return w_avg[:, None].repeat(1, self.num_ws, 1), spread

    def to_space(self, codes: Codes, space: str, w0: torch.Tensor) -> dict[str, torch.Tensor]:
        if space == "wplus":
            return {"w": w0}
        if space == "w":
            if not torch.allclose(w0, w0[:, :1].expand_as(w0)):
                raise ValueError(
                    "this image's latent differs from layer to layer (W+), so one broadcast w "
                    "cannot start from it; edit it in space 'wplus'"
                )
            return {"w": w0[:, 0]}
        return {"z": codes["z"]}

    def from_space(self, latents: dict[str, torch.Tensor], space: str, codes: Codes) -> tuple[torch.Tensor, Codes]:
        if space == "wplus":
            return latents["w"], codes
        if space == "w":
            return latents["w"].unsqueeze(1).expand(-1, self.num_ws, -1), codes
        codes = {**codes, "z": latents["z"]}
        return self.encode(codes), codes


class Conv2dLayer(nn.Module):
    """Conv with equalized learning rate, optional FIR-filtered 2x downsampling, bias + activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_FILTER), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        k = w.shape[-1]
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        else:
            pad0 = self.padding + (4 - self.down + 1) // 2
            pad1 = self.padding + (4 - self.down) // 2
            if k == 1:  # filter and subsample in one pass, then the 1x1 conv on the smaller map
                x = F.conv2d(upfirdn2d(x, self.resample_filter, down=self.down, padding=[pad0, pad1, pad0, pad1]), w)
            else:
                x = F.conv2d(upfirdn2d(x, self.resample_filter, padding=[pad0, pad1, pad0, pad1]), w, stride=self.down)
        b = None if self.bias is None else self.bias.to(x.dtype)
        act_gain = ACTIVATIONS[self.activation].default_gain * gain
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromrgb) conv0, down-conv1, plus a 1x1 down skip; both scaled by sqrt(1/2)."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        img_channels: int = 3,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "fromrgb"):
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        return self.conv1(self.conv0(x), gain=math.sqrt(0.5)) + y


class MinibatchStdLayer(nn.Module):
    """Appends the mean standard deviation over groups of samples as extra feature maps."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        f = self.num_channels
        y = x.float().reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/g, f]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch stddev, conv, dense, and the real/fake logit."""

    def __init__(
        self,
        in_channels: int,
        resolution: int = 4,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


class StyleGAN2Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: image [B, 3, R, R] in [-1, 1] -> logit [B, 1]."""

    def __init__(
        self,
        resolution: int = 256,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        img_channels: int = 3,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.block_resolutions = [2**i for i in range(int(np.log2(resolution)), 2, -1)]
        for res in self.block_resolutions:
            in_ch = 0 if res == resolution else channels_at(res, channel_base, channel_max)
            block = DiscriminatorBlock(
                in_ch,
                channels_at(res, channel_base, channel_max),
                channels_at(res // 2, channel_base, channel_max),
                img_channels,
                conv_clamp,
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(
            channels_at(4, channel_base, channel_max), 4, mbstd_group_size, mbstd_num_channels, conv_clamp
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[-1] != self.resolution or img.shape[-2] != self.resolution:
            raise ValueError(
                f"the discriminator expects images [B, C, {self.resolution}, {self.resolution}], got {tuple(img.shape)}"
            )
        x = img
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        return self.b4(x)
