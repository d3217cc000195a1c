"""BigGAN (Brock et al., 2019): class-conditional generator and projection discriminator.

Architecturally equivalent to the authors' PyTorch BigGAN (ajbrock/BigGAN-PyTorch, ``BigGAN.py`` /
``layers.py``) with ``G_shared``, ``hier``, ``D_wide`` and SN parameterization, so that its
``G.pth`` / ``D.pth`` / ``G_ema.pth`` state dicts, and the TF-Hub weights converted to that layout,
load with ``load_state_dict`` as they are (the TF-Hub conversion has no ``sv0`` buffers: load it
with ``strict=False`` or fill them with ones). The state-dict layout, per module:

- spectral norm: the raw ``weight`` (and ``bias``) plus the buffers ``u0`` ([1, weight.size(0)],
  the power-iteration vector) and ``sv0`` ([1], the last estimate of the top singular value, only
  logged). The forward pass divides ``weight`` by the singular value from one power-iteration step.
- generator: ``shared`` (class embedding), ``linear`` (first z chunk to 4x4 features),
  ``blocks.{i}.0`` (residual up-block: ``bn1``, ``conv1``, ``bn2``, ``conv2``, ``conv_sc``),
  ``blocks.{i}.1`` (self-attention: ``theta``, ``phi``, ``g``, ``o``, ``gamma``) where attention
  is, ``output_layer.0`` (batch norm ``gain``/``bias``/``stored_mean``/``stored_var``) and
  ``output_layer.2`` (the RGB conv). Class-conditional batch norms hold ``gain``/``bias`` linear
  layers (no bias) on [shared embedding, z chunk] and ``stored_mean``/``stored_var``.
- discriminator: ``blocks.{i}.0`` (residual down-block ``conv1``, ``conv2``, ``conv_sc``),
  ``blocks.{i}.1`` (attention), ``linear`` (unconditional score) and ``embed`` (projection).

The generator is a :class:`~pbw.models.maskable.MaskableGenerator`: ``encode`` runs the first
linear layer and the first block (with its attention, if any) and returns that block's features,
[B, 16 ch, 8, 8] at 128 and 256 px. ``decode(w, w0, mask, cond=codes)`` blends them as
``w * m + w0 * (1 - m)`` at 8 x 8 and runs the rest of the generator. The rest is conditioned on
the class and the later z chunks, which ``w`` does not hold: ``cond`` must be the codes ``w`` was
encoded from (the dict of ``sample``). Editing should use the generator in ``eval()`` mode, so
batch norm uses its stored statistics and the output of each image does not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pbw.models.maskable import Codes, MaskableGenerator, paint_regions, resize_mask

# Channel multipliers of the published architectures (per block, in units of `ch`).
G_CHANNELS: dict[int, list[int]] = {
    32: [4, 4, 4, 4],
    64: [16, 16, 8, 4, 2],
    128: [16, 16, 8, 4, 2, 1],
    256: [16, 16, 8, 8, 4, 2, 1],
    512: [16, 16, 8, 8, 4, 2, 1, 1],
}
D_CHANNELS: dict[int, list[int]] = {
    32: [4, 4, 4, 4],
    64: [1, 2, 4, 8, 16],
    128: [1, 2, 4, 8, 16, 16],
    256: [1, 2, 4, 8, 8, 16, 16],
}
BOTTOM_WIDTH = 4


def _check_resolution(resolution: int, table: dict[int, list[int]], what: str) -> None:
    if resolution not in table:
        raise ValueError(f"BigGAN {what} resolution must be one of {sorted(table)}, got {resolution!r}")


def _as_resolutions(attention: int | Sequence[int] | None) -> set[int]:
    if attention is None:
        return set()
    if isinstance(attention, int):
        return {attention} if attention > 0 else set()
    return {int(a) for a in attention if int(a) > 0}


class SpectralNorm:
    """Mixin: spectral normalization with one power-iteration step per forward pass.

    Keeps the raw ``weight`` as the parameter and the power-iteration vector ``u0`` and the last
    singular value estimate ``sv0`` as buffers (the layout of the authors' BigGAN code). ``u0`` is
    updated in training mode only, so an ``eval()`` model is deterministic.
    """

    weight: nn.Parameter
    u0: torch.Tensor
    sv0: torch.Tensor

    def _init_spectral_norm(self, num_itrs: int, eps: float) -> None:
        self.sn_num_itrs, self.sn_eps = num_itrs, eps
        self.register_buffer("u0", torch.randn(1, self.weight.shape[0]))
        self.register_buffer("sv0", torch.ones(1))

    def normalized_weight(self) -> torch.Tensor:
        """``weight`` divided by its largest singular value (estimated in float32)."""
        with torch.autocast(self.weight.device.type, enabled=False):
            w_mat = self.weight.float().flatten(1)
            with torch.no_grad():
                u = self.u0
                for _ in range(self.sn_num_itrs):
                    v = F.normalize(u @ w_mat, dim=1, eps=self.sn_eps)
                    u = F.normalize(v @ w_mat.t(), dim=1, eps=self.sn_eps)
                if self.training:
                    self.u0.copy_(u)
            sigma = (v @ w_mat.t() @ u.t()).squeeze()
            if self.training:
                self.sv0.copy_(sigma.detach())
        return self.weight / sigma.to(self.weight.dtype)


class SNConv2d(nn.Conv2d, SpectralNorm):
    """Conv2d with spectral norm (``weight``, ``bias``, ``u0``, ``sv0``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int | None = None,
        bias: bool = True,
        num_itrs: int = 1,
        eps: float = 1e-6,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2 if padding is None else padding, bias=bias
        )
        self._init_spectral_norm(num_itrs, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class SNLinear(nn.Linear, SpectralNorm):
    """Linear layer with spectral norm (``weight``, ``bias``, ``u0``, ``sv0``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, num_itrs: int = 1, eps: float = 1e-6):
        super().__init__(in_features, out_features, bias=bias)
        self._init_spectral_norm(num_itrs, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(nn.Embedding, SpectralNorm):
    """Embedding with spectral norm over the [num_embeddings, dim] matrix (``u0`` has num_embeddings)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, num_itrs: int = 1, eps: float = 1e-6):
        super().__init__(num_embeddings, embedding_dim)
        self._init_spectral_norm(num_itrs, eps)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.embedding(y, self.normalized_weight())


class SelfAttention(nn.Module):
    """SAGAN non-local block: keys and values max-pooled 2x, output scaled by a learned ``gamma`` (init 0)."""

    def __init__(self, channels: int, num_itrs: int = 1, eps: float = 1e-6):
        super().__init__()
        if channels < 8:
            raise ValueError(
                f"self-attention needs at least 8 channels (it projects to channels // 8), got "
                f"{channels}: widen the model (ch) or move the attention to another resolution"
            )
        self.channels = channels
        conv = dict(kernel_size=1, padding=0, bias=False, num_itrs=num_itrs, eps=eps)
        self.theta = SNConv2d(channels, channels // 8, **conv)
        self.phi = SNConv2d(channels, channels // 8, **conv)
        self.g = SNConv2d(channels, channels // 2, **conv)
        self.o = SNConv2d(channels // 2, channels, **conv)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.theta(x).flatten(2).transpose(1, 2)  # [B, HW, C/8]
        key = F.max_pool2d(self.phi(x), 2).flatten(2).transpose(1, 2)  # [B, HW/4, C/8]
        value = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)  # [B, HW/4, C/2]
        out = F.scaled_dot_product_attention(query, key, value, scale=1.0)  # softmax(q k^T) v
        out = out.transpose(1, 2).reshape(b, self.channels // 2, h, w)
        return x + self.gamma * self.o(out)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose per-sample gain (1 + linear) and bias (linear) come from a conditioning vector.

    Running statistics live in ``stored_mean`` / ``stored_var`` (momentum 0.1).
    """

    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-5, num_itrs: int = 1, sn_eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gain = SNLinear(cond_dim, channels, bias=False, num_itrs=num_itrs, eps=sn_eps)
        self.bias = SNLinear(cond_dim, channels, bias=False, num_itrs=num_itrs, eps=sn_eps)
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(y)).unsqueeze(-1).unsqueeze(-1)
        bias = self.bias(y).unsqueeze(-1).unsqueeze(-1)
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, self.training, 0.1, self.eps)
        return out * gain.to(out.dtype) + bias.to(out.dtype)


class BatchNorm2d(nn.Module):
    """Unconditional batch norm with the parameter names ``gain``/``bias`` and stored statistics."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias, self.training, 0.1, self.eps)


class GBlock(nn.Module):
    """Residual up-block: cbn-relu-up-conv3x3-cbn-relu-conv3x3, plus a 1x1-conv shortcut of the upsampled input."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, bn_eps: float, num_itrs: int, sn_eps: float):
        super().__init__()
        sn = dict(num_itrs=num_itrs, eps=sn_eps)
        self.conv1 = SNConv2d(in_channels, out_channels, **sn)
        self.conv2 = SNConv2d(out_channels, out_channels, **sn)
        self.conv_sc = SNConv2d(in_channels, out_channels, kernel_size=1, padding=0, **sn)
        self.bn1 = ConditionalBatchNorm2d(in_channels, cond_dim, bn_eps, num_itrs, sn_eps)
        self.bn2 = ConditionalBatchNorm2d(out_channels, cond_dim, bn_eps, num_itrs, sn_eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        # A 1x1 conv commutes with nearest upsampling: convolving first is the same, 4x cheaper.
        return h + F.interpolate(self.conv_sc(x), scale_factor=2, mode="nearest")


class DBlock(nn.Module):
    """Residual down-block of the wide discriminator (hidden width = output width)."""

    def __init__(
        self, in_channels: int, out_channels: int, preactivation: bool, downsample: bool, num_itrs: int, sn_eps: float
    ):
        super().__init__()
        sn = dict(num_itrs=num_itrs, eps=sn_eps)
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = SNConv2d(in_channels, out_channels, **sn)
        self.conv2 = SNConv2d(out_channels, out_channels, **sn)
        self.learnable_sc = in_channels != out_channels or downsample
        if self.learnable_sc:
            self.conv_sc = SNConv2d(in_channels, out_channels, kernel_size=1, padding=0, **sn)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:
            x = self.conv_sc(x) if self.learnable_sc else x
            return F.avg_pool2d(x, 2) if self.downsample else x
        x = F.avg_pool2d(x, 2) if self.downsample else x
        return self.conv_sc(x) if self.learnable_sc else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal init of every conv, linear and embedding weight (biases keep PyTorch's default)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.orthogonal_(m.weight)


def check_labels(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Return `y` if it is an integer tensor of labels in 0..n_classes-1, else raise a clear error."""
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(
            f"class labels must be an integer tensor, got {type(y).__name__}"
            f"{'' if not isinstance(y, torch.Tensor) else ' of ' + str(y.dtype)}"
        )
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"class label {bad} is outside this model's classes 0..{n_classes - 1}; "
                f"use labels of the {n_classes} classes it was built (or trained) with"
            )
    return y.long()


class BigGANGenerator(MaskableGenerator):
    """BigGAN generator with shared class embedding, hierarchical z and class-conditional batch norm.

    `resolution` 32..512 picks the published block layout; `ch` is the width multiplier (96 in the
    published 128/256 px models); `dim_z` is rounded down to a multiple of the number of z chunks
    (blocks + 1): 120 at 128 px, 140 at 256 px; `attention` lists the resolutions with a
    self-attention layer (64 at 128 px, 128 at 256 px). `init="none"` skips the orthogonal init
    (when weights are loaded anyway).
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 96,
        n_classes: int = 1000,
        dim_z: int = 120,
        shared_dim: int = 128,
        attention: int | Sequence[int] | None = 64,
        bn_eps: float = 1e-5,
        sn_eps: float = 1e-6,
        num_sv_itrs: int = 1,
        init: str = "ortho",
    ):
        super().__init__()
        _check_resolution(resolution, G_CHANNELS, "generator")
        if init not in ("ortho", "none"):
            raise ValueError(f"init must be 'ortho' or 'none', got {init!r}")
        mult = G_CHANNELS[resolution]
        n_blocks = len(mult) - 1
        self._resolution, self.ch, self.n_classes, self.shared_dim = resolution, ch, n_classes, shared_dim
        self.num_slots = n_blocks + 1
        self.z_chunk_size = dim_z // self.num_slots
        if self.z_chunk_size < 1:
            raise ValueError(f"dim_z={dim_z} is smaller than the {self.num_slots} z chunks of a {resolution} px BigGAN")
        self.dim_z = self.z_chunk_size * self.num_slots
        self.attention = sorted(_as_resolutions(attention))
        sn = dict(num_itrs=num_sv_itrs, eps=sn_eps)
        cond_dim = shared_dim + self.z_chunk_size

        self.shared = nn.Embedding(n_classes, shared_dim)
        self.linear = SNLinear(self.z_chunk_size, mult[0] * ch * BOTTOM_WIDTH**2, **sn)
        blocks = []
        for i in range(n_blocks):
            block = [GBlock(mult[i] * ch, mult[i + 1] * ch, cond_dim, bn_eps, num_sv_itrs, sn_eps)]
            if BOTTOM_WIDTH * 2 ** (i + 1) in self.attention:
                block.append(SelfAttention(mult[i + 1] * ch, **sn))
            blocks.append(nn.ModuleList(block))
        self.blocks = nn.ModuleList(blocks)
        self.output_layer = nn.Sequential(
            BatchNorm2d(mult[-1] * ch, bn_eps), nn.ReLU(), SNConv2d(mult[-1] * ch, 3, **sn)
        )
        if init == "ortho":
            orthogonal_init(self)

    @property
    def resolution(self) -> int:
        return self._resolution

    def conditioning(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Split z into the first chunk (for the linear layer) and per-block [shared(y), z_i] vectors."""
        if z.ndim != 2 or z.shape[1] != self.dim_z:
            raise ValueError(f"z must be [B, {self.dim_z}] for this BigGAN, got {list(z.shape)}")
        if y.shape[0] != z.shape[0]:
            raise ValueError(f"got {z.shape[0]} z vectors but {y.shape[0]} class labels")
        if y.is_floating_point():
            if y.ndim != 2 or y.shape[1] != self.n_classes:
                raise TypeError(
                    f"class codes must be integer labels [B] or float class vectors [B, {self.n_classes}], "
                    f"got a float tensor of shape {list(y.shape)}"
                )
            emb = y.to(self.shared.weight.dtype) @ self.shared.weight  # a class vector mixes class embeddings
        else:
            emb = self.shared(check_labels(y, self.n_classes))
        chunks = torch.split(z, self.z_chunk_size, dim=1)
        return chunks[0], [torch.cat([emb, c], dim=1) for c in chunks[1:]]

    def _run_block(self, index: int, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for layer in self.blocks[index]:
            h = layer(h, y)
        return h

    def _first_block(self, z0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        h = self.linear(z0).view(z0.shape[0], -1, BOTTOM_WIDTH, BOTTOM_WIDTH)
        return self._run_block(0, h, y0)

    def _rest(self, h: torch.Tensor, ys: list[torch.Tensor]) -> torch.Tensor:
        for i in range(1, len(self.blocks)):
            h = self._run_block(i, h, ys[i])
        return torch.tanh(self.output_layer(h))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from z [B, dim_z] and class labels y [B] (int64) or class vectors
        [B, n_classes] (float; a one-hot vector equals its label)."""
        z0, ys = self.conditioning(z, y)
        return self._rest(self._first_block(z0, ys[0]), ys)

    def sample(
        self,
        n: int,
        seed: int | None = None,
        classes: int | Sequence[int] | torch.Tensor | None = None,
        truncation: float | None = None,
        **kwargs,
    ) -> Codes:
        """Codes {"z": [n, dim_z], "class": int64 [n]}, reproducible by `seed`.

        `classes`: one label for all, n labels, or None for uniformly random ones. `truncation`
        resamples z entries with |z| above it (the truncation trick); None for plain N(0, 1).
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        if truncation is None:
            z = torch.randn(n, self.dim_z, generator=gen)
        else:
            if truncation <= 0:
                raise ValueError(f"truncation must be positive, got {truncation}")
            z = nn.init.trunc_normal_(torch.empty(n, self.dim_z), a=-truncation, b=truncation, generator=gen)
        if classes is None:
            y = torch.randint(0, self.n_classes, (n,), generator=gen)
        else:
            y = torch.as_tensor(classes, dtype=torch.int64).flatten()
            if y.numel() == 1:
                y = y.expand(n).clone()
            elif y.numel() != n:
                raise ValueError(f"classes must be one label or {n} labels, got {y.numel()}")
            check_labels(y, self.n_classes)
        device = self.shared.weight.device
        return {"z": z.to(device), "class": y.to(device)}

    is_conditional = True

    def realism(self, images: torch.Tensor, codes: Codes) -> torch.Tensor | None:
        """The projection discriminator's score per image, for the class in `codes` (a class vector's
        top class)."""
        if self.discriminator is None:
            return None
        y = codes["class"]
        return self.discriminator.eval()(images, y.argmax(1) if y.is_floating_point() else y).flatten()

    def decode_parameter_names(self) -> list[str]:
        prefixes = tuple(f"blocks.{i}." for i in range(1, len(self.blocks))) + ("output_layer.",)
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]

    def continuous_codes(self, codes: Codes) -> Codes:
        """Codes with integer class labels replaced by one-hot class vectors [B, n_classes] (float)."""
        y = codes["class"]
        if y.is_floating_point():
            return codes
        return {**codes, "class": F.one_hot(check_labels(y, self.n_classes), self.n_classes).to(codes["z"].dtype)}

    def encode(self, codes: Codes) -> torch.Tensor:
        """The first block's output (with its attention, if any): [B, 16 ch, 8, 8]."""
        z0, ys = self.conditioning(codes["z"], codes["class"])
        return self._first_block(z0, ys[0])

    def decode(
        self,
        w: torch.Tensor,
        w0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cond: Codes | None = None,
    ) -> torch.Tensor:
        """Images from first-block features `w`, blended with `w0` outside `mask` at w's resolution
        (several regions: K feature maps and a K-channel mask, `paint_regions`).

        `cond` (required) is the codes dict `w` was encoded from: its class and later z chunks
        condition the remaining blocks.
        """
        if cond is None:
            raise ValueError(
                "BigGAN decode needs cond=codes (the dict from sample() that encode() got): "
                "the blocks after the first are conditioned on its 'class' and 'z'"
            )
        if mask is not None:
            if w0 is None:
                raise ValueError("decode got a mask but no w0: pass the frozen latent to keep outside the mask")
            m = resize_mask(mask.to(w0.dtype), w0.shape[-1])
            w = paint_regions(w, w0, m)
        _, ys = self.conditioning(cond["z"], cond["class"])
        return self._rest(w, ys)


class BigGANDiscriminator(nn.Module):
    """BigGAN projection discriminator: wide residual down-blocks, self-attention, sum pooling.

    `attention` lists the feature resolutions after which a self-attention layer sits (64 in the
    published 128 and 256 px models). (At 32 px the authors' table labels every block 16 px; here
    the blocks' real output resolutions, 16, 8, 8, 8, place the attention.)
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 96,
        n_classes: int = 1000,
        attention: int | Sequence[int] | None = 64,
        sn_eps: float = 1e-6,
        num_sv_itrs: int = 1,
        init: str = "ortho",
    ):
        super().__init__()
        _check_resolution(resolution, D_CHANNELS, "discriminator")
        if init not in ("ortho", "none"):
            raise ValueError(f"init must be 'ortho' or 'none', got {init!r}")
        self.resolution, self.n_classes = resolution, n_classes
        self.attention = sorted(_as_resolutions(attention))
        mult = D_CHANNELS[resolution]
        # All blocks but the last halve the resolution; at 32 px only the first two do.
        n_down = 2 if resolution == 32 else len(mult) - 1
        sn = dict(num_itrs=num_sv_itrs, eps=sn_eps)
        blocks, in_ch, res = [], 3, resolution
        for i, m in enumerate(mult):
            down = i < n_down
            block = [DBlock(in_ch, m * ch, preactivation=i > 0, downsample=down, num_itrs=num_sv_itrs, sn_eps=sn_eps)]
            res = res // 2 if down else res
            if res in self.attention:
                block.append(SelfAttention(m * ch, **sn))
            blocks.append(nn.ModuleList(block))
            in_ch = m * ch
        self.blocks = nn.ModuleList(blocks)
        self.linear = SNLinear(in_ch, 1, **sn)
        self.embed = SNEmbedding(n_classes, in_ch, **sn)
        if init == "ortho":
            orthogonal_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Realism scores [B, 1] of images x [B, 3, R, R] in [-1, 1] with class labels y [B]."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"D expects images [B, 3, {self.resolution}, {self.resolution}], got {list(x.shape)}")
        y = check_labels(y, self.n_classes)
        h = x
        for block in self.blocks:
            for layer in block:
                h = layer(h)
        h = torch.sum(F.relu(h), dim=(2, 3))
        return self.linear(h) + torch.sum(self.embed(y) * h, dim=1, keepdim=True)
