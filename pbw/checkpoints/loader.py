"""Format detection by content and `load_generator`."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import torch

from pbw.checkpoints.biggan import looks_like_biggan, read_biggan
from pbw.checkpoints.core import FORMAT_VERSION, CheckpointError, ImportedNetworks, build_discriminator, build_generator
from pbw.checkpoints.nvidia import load_pickle, read_nvidia_data
from pbw.checkpoints.nvidia_tf import looks_like_tf_pickle, read_tf_pickle_data
from pbw.checkpoints.rosinality import looks_like_rosinality, read_rosinality
from pbw.models.maskable import MaskableGenerator

PBW_FORMAT = "pbw checkpoint"
ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6) format starts with its magic number pickled at protocol 2.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
SUPPORTED = (
    "pbw Lightning checkpoints",
    "NVIDIA StyleGAN2-ADA/StyleGAN3 pickles (StyleGAN2 networks)",
    "NVIDIA StyleGAN2 TensorFlow pickles (configs E/F)",
    "rosinality stylegan2-pytorch .pt",
    "BigGAN-PyTorch G/D state dicts (.pth)",
)


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; argparse.Namespace (rosinality's saved `args`) is allowed."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: a torch file holding objects other than tensors and plain data, which pbw "
            f"does not unpickle (weights_only=True): {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: a torch file that cannot be read (truncated or corrupt?): {str(e).splitlines()[0]}"
        ) from e


def read_pbw(ckpt: dict[str, Any], path: Path) -> ImportedNetworks:
    """Split a pbw checkpoint's state_dict by network prefix (see the pbw checkpoint convention)."""
    meta = ckpt["pbw"]
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{PBW_FORMAT} {path}: format_version {version!r}; this pbw reads {FORMAT_VERSION}")
    for key in ("family", "generator"):
        if key not in meta:
            raise CheckpointError(f"{PBW_FORMAT} {path}: the 'pbw' entry lacks {key!r}")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{PBW_FORMAT} {path}: no state_dict")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    generators = {key: sd for key in ("generator_ema", "generator") if (sd := part(key + "."))}
    if not generators:
        raise CheckpointError(f"{PBW_FORMAT} {path}: the state_dict has no generator_ema. or generator. weights")
    discriminator = part("discriminator.") or None
    if discriminator is not None and "discriminator" not in meta:
        raise CheckpointError(f"{PBW_FORMAT} {path}: discriminator weights without its 'pbw' constructor kwargs")
    return ImportedNetworks(
        PBW_FORMAT,
        meta["family"],
        dict(meta["generator"]),
        generators,
        dict(meta.get("discriminator") or {}) if discriminator is not None else None,
        discriminator,
        edit_settings=_edit_settings(meta.get("edit_settings"), path),
    )


def _edit_settings(value: Any, path: Path) -> dict[str, dict[str, Any]]:
    """A pbw checkpoint's recommended edit settings: {"masked" | "whole": {EditSettings field: value}}."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        k in ("masked", "whole") and isinstance(v, dict) for k, v in value.items()
    ):
        raise CheckpointError(
            f"{PBW_FORMAT} {path}: 'edit_settings' must map 'masked' and/or 'whole' to settings, got {value!r}"
        )
    return {k: dict(v) for k, v in value.items()}


def _read_torch_object(obj: Any, path: Path) -> ImportedNetworks:
    if isinstance(obj, dict) and "pbw" in obj:
        return read_pbw(obj, path)
    if looks_like_rosinality(obj):
        return read_rosinality(obj)
    if looks_like_biggan(obj):
        return read_biggan(obj)
    keys = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{path}: a torch file in no supported layout (top-level keys {keys}); pbw reads " + ", ".join(SUPPORTED)
    )


def read_checkpoint(path: str | Path, discriminator_file: str | Path | None = None) -> ImportedNetworks:
    """Detect the format of `path` by its content and read its networks into pbw's layout.

    `discriminator_file` adds the discriminator from a separate file (BigGAN-PyTorch keeps G and D
    in G.pth / G_ema.pth and D.pth).
    """
    imported = _read_any(Path(path))
    if not imported.generators:
        raise CheckpointError(
            f"{imported.format} {path}: holds only a discriminator; pass the generator file "
            "(G.pth or G_ema.pth) and this one as the discriminator file"
        )
    if discriminator_file is not None:
        other = _read_any(Path(discriminator_file))
        if other.discriminator is None or other.family != imported.family:
            raise CheckpointError(f"{discriminator_file}: no {imported.family} discriminator in this {other.format}")
        imported.discriminator_kwargs, imported.discriminator = other.discriminator_kwargs, other.discriminator
        imported.notes += [n for n in other.notes if n not in imported.notes]
    return imported


def _read_any(path: Path) -> ImportedNetworks:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_MAGIC))
    if head.startswith(ZIP_MAGIC) or head == LEGACY_TORCH_MAGIC:
        return _read_torch_object(_torch_load(path), path)
    if head[:1] == b"\x80":
        data = load_pickle(path)
        if looks_like_tf_pickle(data):
            return read_tf_pickle_data(data, path)
        return read_nvidia_data(data, path)
    what = "an empty file" if not head else f"a file starting with {head[:8]!r}"
    raise CheckpointError(
        f"{path}: unknown checkpoint format ({what}: neither a torch file nor a pickle); pbw "
        "reads " + ", ".join(SUPPORTED)
    )


def load_generator(
    path: str | Path, *, ema: bool = True, discriminator_file: str | Path | None = None, **overrides: Any
) -> MaskableGenerator:
    """Load the maskable generator from any supported checkpoint, detected by content.

    The EMA generator is used when the file has one (unless `ema=False`). `overrides` replace
    generator constructor arguments (e.g. ``truncation_psi=0.7``; for BigGAN state dicts whose
    configuration the shapes cannot tell, e.g. ``resolution``). The discriminator, when the file
    has one (or `discriminator_file` gives one), is set as ``.discriminator``. Nothing in the file
    is executed. Returns the model in eval mode on the CPU.
    """
    imported = read_checkpoint(path, discriminator_file)
    generator = build_generator(imported, ema=ema, **overrides)
    generator.edit_settings = imported.edit_settings
    discriminator = build_discriminator(imported)
    if discriminator is not None:
        generator.discriminator = discriminator
    return generator
