"""BigGAN-PyTorch (ajbrock) ``G.pth`` / ``G_ema.pth`` / ``D.pth`` state dicts, and TF-Hub BigGANs
converted to that layout by its ``TFHub/converter.py``.

pbw's BigGAN uses the authors' state-dict layout, so the weights load as they are; the work here
is the configuration, read from the shapes: the resolution from the number of blocks, ``ch`` from
the first layer's width, ``dim_z`` from the z chunk size, classes and shared embedding size from
``shared``/``embed``, attention from the blocks that hold one. Two things the shapes cannot tell
are the epsilons: files without ``sv0`` buffers are TF-Hub conversions (batch-norm and spectral-norm
eps 1e-4, as the converter's config; the ``sv0`` buffers, only logged, are filled with ones),
others use the authors' training settings (1e-5 and 1e-6). Pass overrides to change them.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from pbw.checkpoints.core import CheckpointError, ImportedNetworks

FORMAT = "BigGAN-PyTorch state dict"
TFHUB_FORMAT = "TF-Hub BigGAN (converted to the BigGAN-PyTorch layout)"
TRAINED_EPS = {"bn_eps": 1e-5, "sn_eps": 1e-6}  # scripts/launch_BigGAN_*.sh
TFHUB_EPS = {"bn_eps": 1e-4, "sn_eps": 1e-4}  # TFHub/converter.py get_config
BOTTOM_WIDTH = 4


def _tables() -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    try:
        from pbw.models.biggan import D_CHANNELS, G_CHANNELS
    except ImportError as e:
        raise CheckpointError(f"the BigGAN networks (pbw.models.biggan) are not available in this pbw: {e}") from e
    return G_CHANNELS, D_CHANNELS


def _is_generator(obj: dict) -> bool:
    return "shared.weight" in obj and "linear.weight" in obj and "output_layer.2.weight" in obj


def _is_discriminator(obj: dict) -> bool:
    return "embed.weight" in obj and "linear.weight" in obj and "blocks.0.0.conv1.weight" in obj


def looks_like_biggan(obj: Any) -> bool:
    return isinstance(obj, dict) and (_is_generator(obj) or _is_discriminator(obj))


def _blocks(state: dict) -> list[int]:
    rx = re.compile(r"blocks\.(\d+)\.0\.conv1\.weight$")
    return sorted(int(m.group(1)) for k in state if (m := rx.match(k)))


def _resolution(n_blocks: int, table: dict[int, list[int]], offset: int, what: str) -> int:
    matches = [res for res, mult in table.items() if len(mult) - offset == n_blocks]
    if len(matches) != 1:
        raise CheckpointError(
            f"{FORMAT}: a {what} with {n_blocks} blocks matches no published BigGAN layout "
            f"({ {r: len(m) - offset for r, m in table.items()} } blocks per resolution)"
        )
    return matches[0]


def _fill_sv0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for key in state:
        if key.endswith(".u0") and key[:-3] + ".sv0" not in state:
            out[key[:-3] + ".sv0"] = torch.ones(1)
    return out


def generator_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """BigGANGenerator kwargs from a BigGAN-PyTorch generator state dict."""
    g_table, _ = _tables()
    blocks = _blocks(state)
    resolution = _resolution(len(blocks), g_table, 1, "generator")
    mult = g_table[resolution]
    out_features, z_chunk = state["linear.weight"].shape
    ch, rem = divmod(int(out_features), mult[0] * BOTTOM_WIDTH**2)
    if rem or ch < 1:
        raise CheckpointError(
            f"{FORMAT}: generator linear layer has {out_features} outputs, not "
            f"{mult[0]} * ch * {BOTTOM_WIDTH}x{BOTTOM_WIDTH} for a {resolution} px BigGAN"
        )
    n_classes, shared_dim = state["shared.weight"].shape
    attention = [BOTTOM_WIDTH * 2 ** (i + 1) for i in blocks if f"blocks.{i}.1.gamma" in state]
    return {
        "resolution": resolution,
        "ch": ch,
        "n_classes": int(n_classes),
        "dim_z": int(z_chunk) * len(mult),
        "shared_dim": int(shared_dim),
        "attention": attention,
    }


def discriminator_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """BigGANDiscriminator kwargs from a BigGAN-PyTorch discriminator state dict."""
    _, d_table = _tables()
    blocks = _blocks(state)
    resolution = _resolution(len(blocks), d_table, 0, "discriminator")
    mult = d_table[resolution]
    width = int(state["blocks.0.0.conv1.weight"].shape[0])
    ch, rem = divmod(width, mult[0])
    if rem:
        raise CheckpointError(f"{FORMAT}: discriminator first block width {width} is not {mult[0]} * ch")
    n_down = 2 if resolution == 32 else len(mult) - 1
    res, attention = resolution, []
    for i in blocks:
        res = res // 2 if i < n_down else res
        if f"blocks.{i}.1.gamma" in state:
            attention.append(res)
    return {
        "resolution": resolution,
        "ch": ch,
        "n_classes": int(state["embed.weight"].shape[0]),
        "attention": sorted(set(attention)),
    }


def read_biggan(state: dict[str, torch.Tensor]) -> ImportedNetworks:
    """A BigGAN-PyTorch generator or discriminator state dict (a D-only record has no generators)."""
    tfhub = not any(k.endswith(".sv0") for k in state)
    fmt = TFHUB_FORMAT if tfhub else FORMAT
    eps = TFHUB_EPS if tfhub else TRAINED_EPS
    notes = [
        f"batch-norm eps {eps['bn_eps']} and spectral-norm eps {eps['sn_eps']} assumed "
        f"({'TF-Hub converter config' if tfhub else 'BigGAN-PyTorch training scripts'}); not stored in the file"
    ]
    if tfhub:
        notes.append("no sv0 buffers (only logged by BigGAN-PyTorch): filled with ones")
    if _is_generator(state):
        kwargs = {**generator_config(state), **eps}
        return ImportedNetworks(fmt, "biggan", kwargs, {"generator": _fill_sv0(state)}, notes=notes)
    d_kwargs = {**discriminator_config(state), "sn_eps": eps["sn_eps"]}
    return ImportedNetworks(fmt, "biggan", {}, {}, d_kwargs, _fill_sv0(state), notes=notes)
