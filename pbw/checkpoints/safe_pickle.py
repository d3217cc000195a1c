"""A restricted unpickler for NVIDIA network pickles that never runs code from the file.

NVIDIA's StyleGAN2-ADA / StyleGAN3 pickles store every network as a ``torch_utils.persistence``
object: a call to ``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the Python source of
the module that defined the class (``module_src``), the class name and the module's ``__dict__``
(``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, plain attributes). A plain
``pickle.load`` executes ``module_src``. This reader maps that call to :class:`PersistentObject`,
a passive record of the same fields, and rebuilds nothing but tensors, numpy arrays and plain
data; any other global in the file is refused.
"""
from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global that pbw does not rebuild (it would run code)."""


@dataclass
class PersistentObject:
    """What a ``torch_utils.persistence`` object holds, without its code ever being run."""

    class_name: str
    state: dict[str, Any]
    module_src: str = field(repr=False, default="")
    version: int | None = None

    def child(self, name: str) -> "PersistentObject | None":
        """The sub-module `name` (from the pickled ``_modules``), or None."""
        return self.state.get("_modules", {}).get(name)

    def children(self) -> dict[str, "PersistentObject"]:
        return {k: v for k, v in self.state.get("_modules", {}).items() if v is not None}

    def attr(self, name: str, default: Any = None) -> Any:
        """A plain attribute of the pickled module (e.g. ``conv_clamp``), or `default`."""
        return self.state.get(name, default)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer of this module and its children, by dotted name."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None:
                    out[prefix + name] = value
        for name, child in self.children().items():
            if not isinstance(child, PersistentObject):
                raise UnsafePickleError(f"sub-module {prefix + name!r} is a {type(child).__name__}, not a persistent "
                                        "network object")
            out.update(child.tensors(prefix + name + "."))
        return out


def _reconstruct_persistent_obj(meta: dict) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise UnsafePickleError("malformed torch_utils.persistence record (expected a 'class' with a state dict)")
    return PersistentObject(class_name=str(meta.get("class_name")), state=meta["state"],
                            module_src=str(meta.get("module_src", "")), version=meta.get("version"))


def _load_storage_from_bytes(data: bytes):
    # The storage was written by torch.save (legacy format); weights_only reads only tensors.
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if backward_hooks:
        raise UnsafePickleError("a pickled tensor carries backward hooks (code); refusing it")
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"a pickled tensor has a storage of type {type(storage).__name__}")
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if backward_hooks:
        raise UnsafePickleError("a pickled parameter carries backward hooks (code); refusing it")
    return data


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(module, "_reconstruct")] = _reconstruct
        out[(module, "scalar")] = scalar
    return out


_DTYPES = ("float16", "float32", "float64", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("torch", name): getattr(torch, name) for name in _DTYPES},
    **_numpy_globals(),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals are only the entries of :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            hint = ""
            if module.startswith("dnnlib.tflib"):
                hint = (" This is a TensorFlow StyleGAN/StyleGAN2 pickle: convert it to a PyTorch pickle with "
                        "NVIDIA's stylegan2-ada-pytorch legacy.py (in an isolated environment, since that runs the "
                        "pickle's code) and load the result.")
            raise UnsafePickleError(f"the pickle asks for the global {module}.{name}, which pbw does not rebuild "
                                    f"(loading it could run code from the file).{hint}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"the pickle uses a persistent id ({pid!r}), which plain network pickles do not")


def safe_load(f: BinaryIO) -> Any:
    """Unpickle `f`, rebuilding only tensors, numpy arrays, plain data and :class:`PersistentObject` records."""
    return RestrictedUnpickler(f).load()
