"""A restricted unpickler for NVIDIA network pickles that never runs code from the file.

NVIDIA's StyleGAN2-ADA / StyleGAN3 pickles store every network as a ``torch_utils.persistence``
object: a call to ``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the Python source of
the module that defined the class (``module_src``), the class name and the module's ``__dict__``
(``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, plain attributes). A plain
``pickle.load`` executes ``module_src``. This reader maps that call to :class:`PersistentObject`,
a passive record of the same fields, and rebuilds nothing but tensors, numpy arrays and plain
data; any other global in the file is refused.

NVIDIA's original TensorFlow pickles (StyleGAN2, ``(G, D, Gs)``) store every network as a
``dnnlib.tflib.network.Network`` object whose state holds the Python source of the module that
builds its graph (``build_module_src``), which ``Network.__setstate__`` executes. Here that class
is :class:`TFNetwork`, whose ``__setstate__`` only keeps the state dict: the source stays a string.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
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

    def child(self, name: str) -> PersistentObject | None:
        """The sub-module `name` (from the pickled ``_modules``), or None."""
        return self.state.get("_modules", {}).get(name)

    def children(self) -> dict[str, PersistentObject]:
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
                raise UnsafePickleError(
                    f"sub-module {prefix + name!r} is a {type(child).__name__}, not a persistent network object"
                )
            out.update(child.tensors(prefix + name + "."))
        return out


class TFNetwork:
    """What a pickled ``dnnlib.tflib.network.Network`` holds, as a passive record (nothing is built or run).

    Its state (``Network.__getstate__``, version 4): ``version``, ``name``, ``static_kwargs``,
    ``components`` (name -> Network), ``build_module_src``, ``build_func_name`` and ``variables``, a
    list of (local name, numpy array). Unpickling creates the object with ``__new__`` and hands the
    state to :meth:`__setstate__`, which stores it and nothing else.
    """

    state: dict | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"a TensorFlow Network record whose state is a {type(state).__name__}, not a dict")
        self.state = state

    def __repr__(self) -> str:
        state = self.state or {}
        return (
            f"TFNetwork(name={state.get('name')!r}, build_func_name={state.get('build_func_name')!r}, "
            f"{len(state.get('variables') or [])} variables, components={sorted(state.get('components') or {})})"
        )


def _reconstruct_persistent_obj(meta: dict) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise UnsafePickleError("malformed torch_utils.persistence record (expected a 'class' with a state dict)")
    return PersistentObject(
        class_name=str(meta.get("class_name")),
        state=meta["state"],
        module_src=str(meta.get("module_src", "")),
        version=meta.get("version"),
    )


def _load_storage_from_bytes(data: bytes):
    # The storage was written by torch.save (legacy format); weights_only reads only tensors.
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if backward_hooks:
        raise UnsafePickleError("a pickled tensor carries backward hooks (code); refusing it")
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"a pickled tensor has a storage of type {type(storage).__name__}")
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if backward_hooks:
        raise UnsafePickleError("a pickled parameter carries backward hooks (code); refusing it")
    return data


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles write bytes (e.g. numpy array data) as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode is rebuilt only for latin1 text, not {encoding!r}")
    return text.encode("latin1")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # numpy's pickling of arrays at protocol 5 (numpy.core.numeric._frombuffer).
    if (
        not isinstance(buf, (bytes, bytearray, memoryview))
        or not isinstance(dtype, np.dtype)
        or dtype.hasobject
        or order not in ("C", "F")
    ):
        raise UnsafePickleError("a protocol-5 numpy array with unexpected contents")
    return np.frombuffer(buf, dtype=dtype).reshape(tuple(int(n) for n in shape), order=order).copy()


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(module, "_reconstruct")] = _reconstruct
        out[(module, "scalar")] = scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(module, "_frombuffer")] = _frombuffer
    return out


_DTYPES = ("float16", "float32", "float64", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("torch", name): getattr(torch, name) for name in _DTYPES},
    **_numpy_globals(),
}


class _Rebuilder:
    """A fresh, attribute-less handle on one of pbw's rebuild functions, so that the pickle's BUILD
    opcode cannot set attributes (``__defaults__``, ...) on the function itself."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setstate__(self, state):
        raise UnsafePickleError(f"the pickle tries to set attributes of {self._fn.__name__}")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals are only the entries of :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            value = ALLOWED_GLOBALS[(module, name)]
            return _Rebuilder(value) if isinstance(value, types.FunctionType) else value
        except KeyError:
            hint = ""
            if module.startswith("dnnlib.tflib"):
                hint = (
                    " pbw reads TensorFlow network pickles as records of dnnlib.tflib.network.Network and "
                    "rebuilds no other dnnlib.tflib object."
                )
            raise UnsafePickleError(
                f"the pickle asks for the global {module}.{name}, which pbw does not rebuild "
                f"(loading it could run code from the file).{hint}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"the pickle uses a persistent id ({pid!r}), which plain network pickles do not")


def safe_load(f: BinaryIO) -> Any:
    """Unpickle `f`, rebuilding only tensors, numpy arrays, plain data and :class:`PersistentObject` /
    :class:`TFNetwork` records."""
    return RestrictedUnpickler(f).load()
