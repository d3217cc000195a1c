"""Shared pieces of the checkpoint importers: the imported-networks record, strict state loading
with clear errors, channel-width inference, and writing pbw checkpoints."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pbw.models.maskable import MaskableGenerator

FORMAT_VERSION = 1

# family -> (module, generator class, discriminator class)
FAMILIES: dict[str, tuple[str, str, str]] = {
    "stylegan2": ("pbw.models.stylegan2", "StyleGAN2Generator", "StyleGAN2Discriminator"),
    "biggan": ("pbw.models.biggan", "BigGANGenerator", "BigGANDiscriminator"),
}


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or its contents do not fit pbw's architecture."""


@dataclass
class ImportedNetworks:
    """Networks read from a checkpoint, already in pbw's state-dict layout.

    `generators` maps "generator_ema" and/or "generator" to state dicts; `discriminator` is a state
    dict or None. `notes` records choices the importer made (defaults assumed, values computed).
    """

    format: str
    family: str
    generator_kwargs: dict[str, Any]
    generators: dict[str, dict[str, torch.Tensor]]
    discriminator_kwargs: dict[str, Any] | None = None
    discriminator: dict[str, torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)
    #: the edit settings the generator recommends per kind of edit (`MaskableGenerator.edit_settings`)
    edit_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.generator_kwargs["resolution"])


def network_classes(family: str) -> tuple[type, type]:
    """The pbw generator and discriminator classes of a family."""
    if family not in FAMILIES:
        raise CheckpointError(f"unknown generator family {family!r}; pbw knows {sorted(FAMILIES)}")
    module_name, g_name, d_name = FAMILIES[family]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(f"the {family} networks ({module_name}) are not available in this pbw: {e}") from e
    return getattr(module, g_name), getattr(module, d_name)


def construct(cls: type, kwargs: dict[str, Any], fmt: str, what: str) -> nn.Module:
    """`cls(**kwargs)`, with unknown or invalid arguments reported against the checkpoint format.

    A weight initialization the constructor offers to skip (BigGAN's ``init="none"``) is skipped:
    the weights are loaded next.
    """
    params = inspect.signature(cls.__init__).parameters
    if "init" in params and "init" not in kwargs:
        kwargs = {**kwargs, "init": "none"}
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        valid = sorted(k for k in params if k != "self")
        raise CheckpointError(f"{fmt}: {what} ({cls.__name__}) has no argument(s) {unknown}; valid: {valid}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{fmt}: cannot build the {what} ({cls.__name__}) with {kwargs}: {e}") from e


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], fmt: str, what: str) -> None:
    """Load `state` into `module`, requiring every key to match by name and shape."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:

        def head(items):
            return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

        parts = [
            f"{name} {head(items)}"
            for name, items in (("missing:", missing), ("unexpected:", unexpected), ("shape mismatch:", wrong))
            if items
        ]
        raise CheckpointError(
            f"{fmt}: the {what} weights do not fit the architecture {type(module).__name__}: " + "; ".join(parts)
        )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def infer_channel_config(widths: dict[int, int], fmt: str, what: str) -> tuple[int, int]:
    """(channel_base, channel_max) with min(channel_base // res, channel_max) == widths[res] for every res."""
    channel_max = max(widths.values())
    candidates = sorted({w * r for r, w in widths.items()} | {channel_max * max(widths)})
    for base in candidates:
        if all(min(base // r, channel_max) == w for r, w in widths.items()):
            return base, channel_max
    raise CheckpointError(
        f"{fmt}: the {what} widths per resolution {dict(sorted(widths.items()))} do not follow "
        "pbw's rule min(channel_base / resolution, channel_max)"
    )


class StateReader:
    """Takes tensors out of a foreign state dict by name; reports missing and left-over keys."""

    def __init__(self, state: dict[str, Any], fmt: str, what: str):
        self.state, self.fmt, self.what = state, fmt, what
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str, ndim: int | None = None) -> torch.Tensor:
        if key not in self.state:
            raise CheckpointError(f"{self.fmt}: the {self.what} has no {key!r}")
        value = self.state[key]
        if not isinstance(value, torch.Tensor) or (ndim is not None and value.ndim != ndim):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{self.fmt}: {self.what} {key!r} is {shape}, expected a {ndim}-d tensor")
        self.used.add(key)
        return value

    def finish(self) -> None:
        left = sorted(set(self.state) - self.used)
        if left:
            more = f" (+{len(left) - 8} more)" if len(left) > 8 else ""
            raise CheckpointError(f"{self.fmt}: the {self.what} has entries pbw cannot place: {left[:8]}{more}")


def build_generator(imported: ImportedNetworks, ema: bool = True, **overrides: Any) -> MaskableGenerator:
    """Build and load the generator: the EMA weights when `ema` and the file has them, else the raw ones."""
    g_cls, _ = network_classes(imported.family)
    key = "generator_ema" if ema and "generator_ema" in imported.generators else "generator"
    if key not in imported.generators:
        raise CheckpointError(
            f"{imported.format}: the file has no {'EMA ' if ema else 'raw (non-EMA) '}"
            f"generator; it holds {sorted(imported.generators)}"
        )
    generator = construct(g_cls, {**imported.generator_kwargs, **overrides}, imported.format, "generator")
    load_state_strict(generator, imported.generators[key], imported.format, key)
    return generator.eval()


def build_discriminator(imported: ImportedNetworks) -> nn.Module | None:
    """Build and load the discriminator, or None when the file has none."""
    if imported.discriminator is None:
        return None
    _, d_cls = network_classes(imported.family)
    discriminator = construct(d_cls, imported.discriminator_kwargs or {}, imported.format, "discriminator")
    load_state_strict(discriminator, imported.discriminator, imported.format, "discriminator")
    return discriminator.eval()


def save_pbw_checkpoint(imported: ImportedNetworks, path: str | Path, source: str | None = None) -> None:
    """Write `imported` as a pbw checkpoint (see ARCHITECTURE.md, "pbw checkpoint convention").

    Every network is built and loaded first, so only files that load completely are written.
    """
    state_dict: dict[str, torch.Tensor] = {}
    for key in imported.generators:
        generator = build_generator(imported, ema=key == "generator_ema")
        state_dict.update({f"{key}.{k}": v for k, v in generator.state_dict().items()})
    meta: dict[str, Any] = {
        "family": imported.family,
        "generator": dict(imported.generator_kwargs),
        "format_version": FORMAT_VERSION,
        "source_format": imported.format,
    }
    if source is not None:
        meta["source"] = source
    if imported.edit_settings:
        meta["edit_settings"] = imported.edit_settings
    discriminator = build_discriminator(imported)
    if discriminator is not None:
        state_dict.update({f"discriminator.{k}": v for k, v in discriminator.state_dict().items()})
        meta["discriminator"] = dict(imported.discriminator_kwargs or {})
    torch.save({"pbw": meta, "state_dict": state_dict}, Path(path))
