"""rosinality/stylegan2-pytorch checkpoints (``.pt``: ``g_ema``, optional ``g``, ``d``, ``latent_avg``).

The mapping to pbw's (NVIDIA-named) StyleGAN2, with the numerics that make it exact:

- ``style.{i+1}`` (EqualLinear, lr_mul 0.01: weight stored / lr_mul, scaled by lr_mul / sqrt(in),
  bias * lr_mul, then leaky ReLU * sqrt(2)) -> ``mapping.fc{i}``: the same parameterization.
- ``input.input`` [1, C, 4, 4] -> ``synthesis.b4.const``.
- StyledConv ``conv1`` / ``convs.{2k}`` (up) / ``convs.{2k+1}`` -> ``b4.conv1`` / ``b{R}.conv0`` /
  ``b{R}.conv1`` with R = 2^(k+3): ``conv.weight`` [1, O, I, k, k] -> ``weight``,
  ``conv.modulation`` -> ``affine``, ``noise.weight`` [1] -> ``noise_strength``,
  ``activate.bias`` (FusedLeakyReLU: bias, leaky ReLU, * sqrt(2)) -> ``bias``, and
  ``noises.noise_{j}`` [1, 1, R, R] -> ``noise_const``. rosinality's up-conv is
  ``conv_transpose2d`` with the weight as is (a true convolution of the zero-stuffed input), then a
  blur with kernel * 4, as NVIDIA's; pbw's is a correlation (as the TF original's), so the up-conv
  weights are flipped in both spatial axes. The blur and upsample kernels are checked, not kept.
- ``to_rgb1`` / ``to_rgbs.{k}`` -> ``b4.torgb`` / ``b{R}.torgb``; bias [1, 3, 1, 1] -> [3].
- ``latent_avg`` -> ``mapping.w_avg`` (when missing: the mean w of 4096 seeded z, noted).
- D: ``convs.0`` (1x1 ConvLayer) -> ``b{R}.fromrgb``; ResBlock ``convs.{j}`` -> ``b{R/2^(j-1)}``
  (``conv1`` -> ``conv0``, ``conv2`` (blur, stride-2 conv) -> ``conv1``, ``skip`` -> ``skip``;
  (out + skip) / sqrt(2) equals NVIDIA's sqrt(0.5) gains); ``final_conv`` -> ``b4.conv``,
  ``final_linear.0`` / ``.1`` -> ``b4.fc`` / ``b4.out``; minibatch stddev group 4, 1 feature.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from cuda_ops import setup_filter
from pbw.checkpoints.core import CheckpointError, ImportedNetworks, StateReader, infer_channel_config
from pbw.models.stylegan2 import RESAMPLE_FILTER, MappingNetwork

FORMAT = "rosinality stylegan2-pytorch checkpoint"
MAPPING_LR = 0.01  # rosinality's Generator(lr_mlp=0.01); not stored in the checkpoint
W_AVG_SAMPLES = 4096


def looks_like_rosinality(obj: Any) -> bool:
    g = obj.get("g_ema", obj.get("g")) if isinstance(obj, dict) else None
    return isinstance(g, dict) and "input.input" in g and "style.1.weight" in g


def _check_kernel(r: StateReader, key: str, gain: float) -> None:
    expected = setup_filter(RESAMPLE_FILTER, separable=False) * gain
    value = r.take(key, ndim=2)
    if value.shape != expected.shape or not torch.allclose(value.float(), expected):
        raise CheckpointError(f"{FORMAT}: {r.what} {key!r} is not the [1, 3, 3, 1] blur kernel pbw uses")


def _count(state: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _modconv(r: StateReader, src: str, dst: str, out: dict, noise: str | None, flip: bool = False) -> None:
    weight = r.take(f"{src}.conv.weight", ndim=5)[0]
    out[f"{dst}.weight"] = weight.flip([2, 3]) if flip else weight
    out[f"{dst}.affine.weight"] = r.take(f"{src}.conv.modulation.weight", ndim=2)
    out[f"{dst}.affine.bias"] = r.take(f"{src}.conv.modulation.bias", ndim=1)
    if noise is None:  # ToRGB
        out[f"{dst}.bias"] = r.take(f"{src}.bias", ndim=4).reshape(-1)
    else:
        out[f"{dst}.bias"] = r.take(f"{src}.activate.bias", ndim=1)
        out[f"{dst}.noise_strength"] = r.take(f"{src}.noise.weight", ndim=1).reshape(())
        out[f"{dst}.noise_const"] = r.take(noise, ndim=4)[0, 0]


def generator_state(g: dict[str, torch.Tensor], what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """pbw StyleGAN2Generator kwargs (w_avg not included) and state dict from a rosinality Generator."""
    r = StateReader(g, FORMAT, what)
    n_mlp = _count(g, r"style\.(\d+)\.weight$")
    n_up = _count(g, r"to_rgbs\.(\d+)\.conv\.weight$")
    if n_mlp == 0:
        raise CheckpointError(f"{FORMAT}: the {what} has no mapping layers (style.1.weight, ...)")
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = r.take(f"style.{i + 1}.weight", ndim=2)
        out[f"mapping.fc{i}.bias"] = r.take(f"style.{i + 1}.bias", ndim=1)
    out["synthesis.b4.const"] = r.take("input.input", ndim=4)[0]
    _modconv(r, "conv1", "synthesis.b4.conv1", out, noise="noises.noise_0")
    _modconv(r, "to_rgb1", "synthesis.b4.torgb", out, noise=None)
    for k in range(n_up):
        res = 2 ** (k + 3)
        _modconv(r, f"convs.{2 * k}", f"synthesis.b{res}.conv0", out, noise=f"noises.noise_{2 * k + 1}", flip=True)
        _check_kernel(r, f"convs.{2 * k}.conv.blur.kernel", gain=4)
        _modconv(r, f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", out, noise=f"noises.noise_{2 * k + 2}")
        _modconv(r, f"to_rgbs.{k}", f"synthesis.b{res}.torgb", out, noise=None)
        _check_kernel(r, f"to_rgbs.{k}.upsample.kernel", gain=4)
    r.finish()
    widths = {2 ** (i + 2): int(out[f"synthesis.b{2 ** (i + 2)}.conv1.weight"].shape[0]) for i in range(n_up + 1)}
    channel_base, channel_max = infer_channel_config(widths, FORMAT, f"{what} synthesis")
    kwargs = {
        "resolution": 2 ** (n_up + 2),
        "z_dim": int(out["mapping.fc0.weight"].shape[1]),
        "w_dim": int(out[f"mapping.fc{n_mlp - 1}.weight"].shape[0]),
        "mapping_layers": n_mlp,
        "mapping_lr_multiplier": MAPPING_LR,
        "channel_base": channel_base,
        "channel_max": channel_max,
        "img_channels": int(out[f"synthesis.b{2 ** (n_up + 2)}.torgb.weight"].shape[0]),
    }
    return kwargs, out


def _conv_layer(r: StateReader, src: str, dst: str, out: dict, down: bool, activate: bool = True) -> None:
    i = 1 if down else 0
    if down:
        _check_kernel(r, f"{src}.0.kernel", gain=1)
    out[f"{dst}.weight"] = r.take(f"{src}.{i}.weight", ndim=4)
    if activate:
        out[f"{dst}.bias"] = r.take(f"{src}.{i + 1}.bias", ndim=1)


def discriminator_state(d: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """pbw StyleGAN2Discriminator kwargs and state dict from a rosinality Discriminator."""
    r = StateReader(d, FORMAT, "discriminator 'd'")
    n_blocks = _count(d, r"convs\.(\d+)\.conv1\.0\.weight$")
    top = 2 ** (n_blocks + 2)
    out: dict[str, torch.Tensor] = {}
    _conv_layer(r, "convs.0", f"b{top}.fromrgb", out, down=False)
    for j in range(1, n_blocks + 1):
        res = top // 2 ** (j - 1)
        _conv_layer(r, f"convs.{j}.conv1", f"b{res}.conv0", out, down=False)
        _conv_layer(r, f"convs.{j}.conv2", f"b{res}.conv1", out, down=True)
        _conv_layer(r, f"convs.{j}.skip", f"b{res}.skip", out, down=True, activate=False)
    _conv_layer(r, "final_conv", "b4.conv", out, down=False)
    for i, name in enumerate(("fc", "out")):
        out[f"b4.{name}.weight"] = r.take(f"final_linear.{i}.weight", ndim=2)
        out[f"b4.{name}.bias"] = r.take(f"final_linear.{i}.bias", ndim=1)
    r.finish()
    widths = {res: int(out[f"b{res}.conv0.weight"].shape[0]) for res in (top // 2**j for j in range(n_blocks))}
    widths[4] = int(out["b4.conv.weight"].shape[0])
    channel_base, channel_max = infer_channel_config(widths, FORMAT, "discriminator")
    kwargs = {
        "resolution": top,
        "channel_base": channel_base,
        "channel_max": channel_max,
        "mbstd_group_size": 4,
        "mbstd_num_channels": 1,
        "img_channels": int(out[f"b{top}.fromrgb.weight"].shape[1]),
    }
    return kwargs, out


def _mean_w(kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.Tensor:
    mapping = MappingNetwork(
        kwargs["z_dim"],
        kwargs["w_dim"],
        num_ws=1,
        num_layers=kwargs["mapping_layers"],
        lr_multiplier=kwargs["mapping_lr_multiplier"],
    )
    mapping.load_state_dict(
        {k[len("mapping.") :]: v for k, v in state.items() if k.startswith("mapping.")}, strict=False
    )
    z = torch.randn(W_AVG_SAMPLES, kwargs["z_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return mapping(z)[:, 0].mean(dim=0)


def read_rosinality(ckpt: dict[str, Any]) -> ImportedNetworks:
    """Read a rosinality checkpoint dict (as torch.load returns it) into pbw's StyleGAN2 layout."""
    generators, kwargs, notes = {}, None, []
    for name, key in (("g_ema", "generator_ema"), ("g", "generator")):
        if name in ckpt:
            g_kwargs, state = generator_state(ckpt[name], f"generator {name!r}")
            if kwargs is not None and g_kwargs != kwargs:
                raise CheckpointError(f"{FORMAT}: g and g_ema differ in architecture: {kwargs} vs {g_kwargs}")
            kwargs, generators[key] = g_kwargs, state
    latent_avg = ckpt.get("latent_avg")
    for key, state in generators.items():
        if isinstance(latent_avg, torch.Tensor):
            if latent_avg.numel() != kwargs["w_dim"]:
                raise CheckpointError(f"{FORMAT}: latent_avg has {latent_avg.numel()} values, w has {kwargs['w_dim']}")
            state["mapping.w_avg"] = latent_avg.reshape(-1).float()
        else:
            state["mapping.w_avg"] = _mean_w(kwargs, state)
            notes.append(f"no latent_avg in the file: {key} w_avg is the mean w of {W_AVG_SAMPLES} z (seed 0)")
    notes.append(f"mapping lr multiplier assumed {MAPPING_LR} (rosinality's default; not stored in the file)")
    imported = ImportedNetworks(FORMAT, "stylegan2", kwargs, generators, notes=notes)
    if isinstance(ckpt.get("d"), dict):
        imported.discriminator_kwargs, imported.discriminator = discriminator_state(ckpt["d"])
    return imported
