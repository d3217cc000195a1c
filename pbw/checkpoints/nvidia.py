"""NVIDIA StyleGAN2-ADA (PyTorch) and StyleGAN3-repo pickles of StyleGAN2 networks.

The file is a pickled dict (``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``)
read with :mod:`pbw.checkpoints.safe_pickle`, so the module source NVIDIA embeds is never run.
Parameter names match pbw's StyleGAN2 one to one; the architecture is read from the tensor shapes
and the pickled layers' own attributes (``conv_clamp``, ``bias_gain``, ``w_avg_beta``, mbstd).
One convention differs: NVIDIA's up-convs (``conv0``, ``flip_weight = (up == 1)``) hand the weight
unflipped to ``conv_transpose2d``, a true convolution of the zero-stuffed input, where pbw
correlates (as the TF original and NVIDIA's own ``legacy.py`` conversion from it do), so those
weights are flipped in both spatial axes on import.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from cuda_ops import setup_filter
from pbw.checkpoints.core import CheckpointError, ImportedNetworks, infer_channel_config
from pbw.checkpoints.safe_pickle import PersistentObject, UnsafePickleError, safe_load
from pbw.models.stylegan2 import RESAMPLE_FILTER

FORMAT = "NVIDIA StyleGAN2-ADA/StyleGAN3 pickle"
_BLOCK = re.compile(r"b(\d+)$")


def load_pickle(path: str | Path) -> Any:
    """Unpickle a network pickle with the restricted unpickler (nothing in it runs).

    A global the unpickler does not rebuild is reported as a CheckpointError caused by the
    :class:`~pbw.checkpoints.safe_pickle.UnsafePickleError`.
    """
    try:
        with open(path, "rb") as f:
            return safe_load(f)
    except UnsafePickleError as e:
        raise CheckpointError(f"network pickle {path}: refused: {e}") from e
    except (
        EOFError,
        pickle.UnpicklingError,
        RuntimeError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        raise CheckpointError(f"{path}: not a readable pickle (truncated or corrupt?): {type(e).__name__}: {e}") from e


def read_nvidia_pickle(path: str | Path) -> ImportedNetworks:
    """Read G_ema / G / D of an NVIDIA network pickle into pbw's StyleGAN2 layout."""
    return read_nvidia_data(load_pickle(path), path)


def read_nvidia_data(data: Any, path: str | Path) -> ImportedNetworks:
    """G_ema / G / D of an unpickled NVIDIA StyleGAN2-ADA/StyleGAN3 network pickle (a dict)."""
    if not isinstance(data, dict) or not any(isinstance(data.get(k), PersistentObject) for k in ("G", "G_ema")):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: a pickle, but not an NVIDIA network pickle (no persistent 'G'/'G_ema' networks; found {keys})"
        )
    generators, kwargs = {}, None
    for name, key in (("G_ema", "generator_ema"), ("G", "generator")):
        if isinstance(data.get(name), PersistentObject):
            g_kwargs, state = generator_from_record(data[name], name)
            if kwargs is not None and g_kwargs != kwargs:
                raise CheckpointError(f"{FORMAT}: G and G_ema differ in architecture: {kwargs} vs {g_kwargs}")
            kwargs, generators[key] = g_kwargs, state
    imported = ImportedNetworks(FORMAT, "stylegan2", kwargs, generators)
    synthesis = (data.get("G_ema") or data.get("G")).child("synthesis")
    fp16 = sorted(res for res, block in _blocks(synthesis, "G").items() if block.attr("use_fp16"))
    if fp16:
        imported.notes.append(f"NVIDIA ran resolutions {fp16} in float16 on the GPU; pbw computes in float32")
    ignored = sorted(k for k in data if k not in ("G", "G_ema", "D") and data[k] is not None)
    if ignored:
        imported.notes.append(f"not imported: {', '.join(ignored)}")
    if isinstance(data.get("D"), PersistentObject):
        imported.discriminator_kwargs, imported.discriminator = discriminator_from_record(data["D"])
    return imported


def _check_class(rec: PersistentObject, expected: str, name: str) -> None:
    if rec.class_name != expected:
        raise CheckpointError(f"{FORMAT}: {name} is a {rec.class_name!r}, expected a StyleGAN2 {expected!r}")
    c_dim = rec.attr("c_dim", rec.init_kwargs.get("c_dim", 0)) or 0
    if c_dim:
        raise CheckpointError(
            f"{FORMAT}: {name} is class-conditional (c_dim={c_dim}); pbw's StyleGAN2 is unconditional"
        )


def _blocks(rec: PersistentObject, name: str) -> dict[int, PersistentObject]:
    blocks = {int(m.group(1)): child for key, child in rec.children().items() if (m := _BLOCK.match(key))}
    if not blocks:
        raise CheckpointError(
            f"{FORMAT}: {name} has no b<resolution> blocks (children {sorted(rec.children())}); "
            "StyleGAN3 (alias-free) networks are not StyleGAN2 and are not supported"
        )
    return blocks


def _one_value(values: set, what: str, name: str) -> Any:
    if len(values) > 1:
        raise CheckpointError(f"{FORMAT}: {name} mixes {what} values {sorted(values, key=str)}; pbw uses one")
    return next(iter(values), None)


def _drop_filters(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Remove the constant resample filters NVIDIA stores as buffers, checking they are pbw's filter."""
    expected = setup_filter(RESAMPLE_FILTER, separable=False)
    out = {}
    for key, value in state.items():
        if key.split(".")[-1] == "resample_filter":
            if value.shape != expected.shape or not torch.allclose(value.float(), expected):
                raise CheckpointError(f"{FORMAT}: {name}.{key} is not the [1, 3, 3, 1] filter pbw uses")
        else:
            out[key] = value
    return out


def _shape(state: dict[str, torch.Tensor], key: str, dim: int, name: str) -> int:
    if key not in state:
        raise CheckpointError(f"{FORMAT}: {name} has no {key!r}")
    return int(state[key].shape[dim])


def generator_from_record(rec: PersistentObject, name: str = "G") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """pbw StyleGAN2Generator kwargs and state dict from a pickled NVIDIA ``Generator``."""
    _check_class(rec, "Generator", name)
    synthesis, mapping = rec.child("synthesis"), rec.child("mapping")
    if synthesis is None or mapping is None:
        raise CheckpointError(f"{FORMAT}: {name} lacks its synthesis or mapping network")
    blocks = _blocks(synthesis, f"{name}.synthesis")
    for res, block in blocks.items():
        arch = block.attr("architecture", "skip")
        if arch != "skip":
            raise CheckpointError(
                f"{FORMAT}: {name}.synthesis.b{res} uses the {arch!r} architecture; pbw's "
                "StyleGAN2 generator is the 'skip' one (config E/F)"
            )
    state = _drop_filters(rec.tensors(), name)
    for res in blocks:
        key = f"synthesis.b{res}.conv0.weight"
        if key in state:
            state[key] = state[key].flip([2, 3])
    widths = {res: _shape(state, f"synthesis.b{res}.conv1.weight", 0, name) for res in blocks}
    channel_base, channel_max = infer_channel_config(widths, FORMAT, f"{name} synthesis")
    fcs = sorted(int(k[2:]) for k in mapping.children() if k.startswith("fc"))
    if not fcs or fcs != list(range(len(fcs))):
        raise CheckpointError(f"{FORMAT}: {name}.mapping has layers {sorted(mapping.children())}, expected fc0..fcN")
    fc0 = mapping.child("fc0")
    layers = [
        child
        for block in blocks.values()
        for key, child in block.children().items()
        if key in ("conv0", "conv1", "torgb")
    ]
    kwargs = {
        "resolution": max(blocks),
        "z_dim": _shape(state, "mapping.fc0.weight", 1, name),
        "w_dim": _shape(state, f"mapping.fc{fcs[-1]}.weight", 0, name),
        "mapping_layers": len(fcs),
        "mapping_lr_multiplier": float(fc0.attr("bias_gain", mapping.init_kwargs.get("lr_multiplier", 0.01))),
        "channel_base": channel_base,
        "channel_max": channel_max,
        "conv_clamp": _one_value({layer.attr("conv_clamp") for layer in layers}, "conv_clamp", name),
        "w_avg_beta": float(mapping.attr("w_avg_beta", 0.995)),
        "img_channels": _shape(state, f"synthesis.b{max(blocks)}.torgb.weight", 0, name),
    }
    return kwargs, state


def discriminator_from_record(rec: PersistentObject, name: str = "D") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """pbw StyleGAN2Discriminator kwargs and state dict from a pickled NVIDIA ``Discriminator``."""
    _check_class(rec, "Discriminator", name)
    blocks = _blocks(rec, name)
    for res, block in blocks.items():
        arch = block.attr("architecture", "resnet")
        if arch != "resnet":
            raise CheckpointError(
                f"{FORMAT}: {name}.b{res} uses the {arch!r} architecture; pbw's StyleGAN2 "
                "discriminator is the 'resnet' one (config E/F)"
            )
    epilogue = blocks.pop(4, None)
    if epilogue is None or not blocks:
        raise CheckpointError(f"{FORMAT}: {name} lacks its 4x4 epilogue or its resolution blocks")
    state = _drop_filters(rec.tensors(), name)
    widths = {res: _shape(state, f"b{res}.conv0.weight", 0, name) for res in blocks}
    widths[4] = _shape(state, "b4.conv.weight", 0, name)
    channel_base, channel_max = infer_channel_config(widths, FORMAT, f"{name}")
    mbstd = epilogue.child("mbstd")
    if mbstd is None or not mbstd.attr("num_channels", 1) or mbstd.attr("group_size", 4) is None:
        raise CheckpointError(
            f"{FORMAT}: {name}.b4 has no minibatch-stddev layer with a fixed group size; pbw's discriminator needs one"
        )
    convs = [
        layer
        for block in blocks.values()
        for key, layer in block.children().items()
        if key in ("fromrgb", "conv0", "conv1")
    ] + [epilogue.child("conv")]
    top = max(blocks)
    kwargs = {
        "resolution": top,
        "channel_base": channel_base,
        "channel_max": channel_max,
        "mbstd_group_size": int(mbstd.attr("group_size", 4)),
        "mbstd_num_channels": int(mbstd.attr("num_channels", 1)),
        "img_channels": _shape(state, f"b{top}.fromrgb.weight", 1, name),
        "conv_clamp": _one_value(
            {layer.attr("conv_clamp") for layer in convs if layer is not None}, "conv_clamp", name
        ),
    }
    return kwargs, state
