"""NVIDIA's original TensorFlow StyleGAN2 pickles (``stylegan2-<dataset>-config-f.pkl``: a tuple (G, D, Gs)).

Sources read to learn the format (nothing copied): NVlabs/stylegan2 ``dnnlib/tflib/network.py``
(``Network.__getstate__``: the pickled state), ``training/networks_stylegan2.py`` (the graphs:
``get_weight``, ``modulated_conv2d_layer``, ``G_mapping``, ``G_synthesis_stylegan2``,
``D_stylegan2``, ``minibatch_stddev_layer``) and ``dnnlib/tflib/ops/upfirdn_2d.py``
(``upsample_conv_2d``, ``conv_downsample_2d``, ``upsample_2d``); NVIDIA's stylegan2-ada-pytorch
``legacy.py`` names the same variables when it converts these files to PyTorch.

Every network is a ``dnnlib.tflib.network.Network`` read as a
:class:`~pbw.checkpoints.safe_pickle.TFNetwork` record: its ``build_module_src`` is never run.
The graph is identified by the build function names: G and Gs are ``G_main`` with components
``mapping`` = ``G_mapping`` and ``synthesis`` = ``G_synthesis_stylegan2`` (architecture 'skip'),
D is ``D_stylegan2`` ('resnet'): configs E and F, the published files. StyleGAN (2019), configs
A-D, StyleGAN2-ADA's TensorFlow networks, 'orig'/'resnet' generators, 'orig'/'skip'
discriminators and conditional networks are refused. The static kwargs that shape the graph are
checked against the variables (with networks_stylegan2.py's defaults where a kwarg is absent);
run-time ones (``randomize_noise``, ``fused_modconv``, truncation, style mixing) do not change the
weights and are not needed; kwargs the graph functions do not know are ignored by them (they take
``**_kwargs``) and are listed as a note.

Variables, TF layout -> pbw:

- Gs (the EMA generator, preferred) -> ``generator_ema``, G -> ``generator``. Own variables:
  ``dlatent_avg`` -> ``mapping.w_avg``; ``lod`` (the progressive-growing level, which
  G_synthesis_stylegan2 has no use for) is read and dropped.
- ``mapping/Dense{i}/weight`` [in, out] -> ``mapping.fc{i}.weight`` [out, in]; ``/bias`` -> ``.bias``.
  ``get_weight`` stores N(0, 1 / lrmul) and multiplies by lrmul / sqrt(fan_in) at run time, and
  ``apply_bias_act`` the bias by lrmul: pbw's FullyConnectedLayer parameterization, so the values
  are copied unscaled (``mapping_lrmul``, default 0.01, becomes ``mapping_lr_multiplier``).
- ``synthesis/4x4/Const/const`` [1, C, 4, 4] -> ``synthesis.b4.const`` [C, 4, 4].
- ``synthesis/{R}x{R}/{Conv|Conv0_up|Conv1|ToRGB}`` -> ``b4.conv1`` / ``b{R}.conv0`` / ``b{R}.conv1`` /
  ``b{R}.torgb``: ``weight`` [k, k, in, out] -> [out, in, k, k]; ``mod_weight`` [w_dim, in] ->
  ``affine.weight`` [in, w_dim]; ``mod_bias`` + 1 -> ``affine.bias`` (TF adds the 1 after the bias);
  ``bias``; ``noise_strength`` []. The 1 / sqrt(fan_in) weight gain cancels in demodulation
  (ToRGB's, not demodulated, is pbw's style gain). TF adds demodulation's 1e-8 to the sum of
  squares of the gain-scaled weight, pbw to the unscaled one: a relative difference of about 1e-8.
- ``synthesis/noise{i}`` [1, 1, R, R] -> ``noise_const`` [R, R] of layer i: 0 = ``b4.conv1``,
  2 log2(R) - 5 = ``b{R}.conv0``, 2 log2(R) - 4 = ``b{R}.conv1``.
- Up-conv orientation: ``upsample_conv_2d`` flips the kernel (``w[::-1, ::-1]``) and hands it to
  ``conv2d_transpose``, which scatters every input pixel times the kernel (a true convolution of
  the zero-stuffed input); flip then convolution is a correlation with the kernel as stored, which
  is pbw's convention, so ``Conv0_up/weight`` is copied unflipped. (NVIDIA's PyTorch port applies
  its up-conv kernel as a convolution, so legacy.py flips ``Conv0_up`` and pbw's importer of those
  pickles flips it back.)
- D: ``{R}x{R}/FromRGB`` (the top resolution only), ``Conv0``, ``Conv1_down``, ``Skip`` (no bias) ->
  ``b{R}.fromrgb``, ``conv0``, ``conv1``, ``skip``; ``4x4/Conv`` -> ``b4.conv``; ``4x4/Dense0``
  [C*16, C] -> ``b4.fc``; ``Output`` [C, 1] -> ``b4.out`` (one logit, unconditional). TF's residual
  (x + t) / sqrt(2) equals pbw's sqrt(0.5) gains; ``conv_downsample_2d`` (FIR, then a stride-2
  correlation) is pbw's down-conv. The minibatch stddev uses ``mbstd_group_size`` (default 4) and
  ``mbstd_num_features`` (default 1); TF needs a batch divisible by the group size, pbw then
  computes the same.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pbw.checkpoints.core import CheckpointError, ImportedNetworks, StateReader, infer_channel_config
from pbw.checkpoints.safe_pickle import TFNetwork
from pbw.models.stylegan2 import RESAMPLE_FILTER

FORMAT = "NVIDIA StyleGAN2 TensorFlow pickle"
SUPPORTED_GRAPH = (
    "StyleGAN2 configs E/F: G_main with G_mapping and G_synthesis_stylegan2 (architecture 'skip'), "
    "D_stylegan2 (architecture 'resnet')"
)

# Build functions pbw recognizes but does not implement, and what they are.
OTHER_NETWORKS = {
    "G_style": "the original StyleGAN (or StyleGAN2 config A) generator",
    "G_synthesis": "a StyleGAN (2019) or StyleGAN2-ADA TensorFlow synthesis network",
    "D_basic": "the original StyleGAN (or StyleGAN2 config A) discriminator",
    "G_synthesis_stylegan_revised": "a StyleGAN2 config B-D (progressive growing) synthesis network",
    "D_stylegan": "a StyleGAN2 config B-D (progressive growing) discriminator",
    "D_main": "a StyleGAN2-ADA TensorFlow discriminator",
}

# networks_stylegan2.py's keyword arguments: those pbw checks against the variables or uses, and the
# run-time/training ones that do not change the weights. The defaults are the graph functions'.
MAIN_RUNTIME = (
    "truncation_psi",
    "truncation_cutoff",
    "truncation_psi_val",
    "truncation_cutoff_val",
    "style_mixing_prob",
    "is_training",
    "is_validation",
    "return_dlatents",
    "is_template_graph",
    "mapping_func",
    "synthesis_func",
    "dlatent_avg_beta",
)
MAPPING_KWARGS = (
    "latent_size",
    "label_size",
    "dlatent_size",
    "dlatent_broadcast",
    "mapping_layers",
    "mapping_fmaps",
    "mapping_lrmul",
    "mapping_nonlinearity",
    "normalize_latents",
    "dtype",
)
SYNTHESIS_KWARGS = (
    "dlatent_size",
    "num_channels",
    "resolution",
    "fmap_base",
    "fmap_decay",
    "fmap_min",
    "fmap_max",
    "randomize_noise",
    "architecture",
    "nonlinearity",
    "dtype",
    "resample_kernel",
    "fused_modconv",
)
D_KWARGS = (
    "num_channels",
    "resolution",
    "label_size",
    "fmap_base",
    "fmap_decay",
    "fmap_min",
    "fmap_max",
    "architecture",
    "nonlinearity",
    "mbstd_group_size",
    "mbstd_num_features",
    "dtype",
    "resample_kernel",
    "structure",
    "is_template_graph",
)
_RES_SCOPE = re.compile(r"^(\d+)x(\d+)/")


def looks_like_tf_pickle(data: Any) -> bool:
    """An unpickled TensorFlow network pickle: a Network record or a tuple holding some."""
    return isinstance(data, TFNetwork) or (
        isinstance(data, (tuple, list)) and any(isinstance(x, TFNetwork) for x in data)
    )


# ---------------------------------------------------------------- the pickled records
def _state(net: Any, what: str) -> dict[str, Any]:
    if not isinstance(net, TFNetwork) or not isinstance(net.state, dict):
        raise CheckpointError(f"{FORMAT}: {what} is a {type(net).__name__}, not a pickled dnnlib.tflib Network")
    state = net.state
    if state.get("version") not in (2, 3, 4):
        raise CheckpointError(
            f"{FORMAT}: {what} has Network state version {state.get('version')!r}; dnnlib.tflib writes 2, 3 or 4"
        )
    for key, kind in (("name", str), ("build_func_name", str), ("static_kwargs", dict), ("variables", (list, tuple))):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(
                f"{FORMAT}: {what}'s state has no valid {key!r} (found {type(state.get(key)).__name__})"
            )
    if not isinstance(state.get("components", {}), dict):
        raise CheckpointError(f"{FORMAT}: {what}'s components are a {type(state['components']).__name__}")
    return state


def _expect_func(net: TFNetwork, expected: str, what: str) -> dict[str, Any]:
    state = _state(net, what)
    func = state["build_func_name"]
    if func != expected:
        known = OTHER_NETWORKS.get(func, "a network")
        raise CheckpointError(
            f"{FORMAT}: {what} ({state['name']!r}) is built by {func!r}, {known}, where "
            f"{expected!r} was expected; pbw reads {SUPPORTED_GRAPH}"
        )
    return state


def _array(value: Any, name: str, what: str) -> torch.Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = np.float32(value)
    if not isinstance(value, (np.ndarray, np.generic)) or np.asarray(value).dtype.kind not in "fiu":
        raise CheckpointError(f"{FORMAT}: {what} variable {name!r} is a {type(value).__name__}, not a numeric array")
    return torch.tensor(np.asarray(value), dtype=torch.float32)


def tf_variables(net: TFNetwork, what: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every variable of `net` and its components as a tensor, named ``component/local/name``
    (the component's key in its parent's ``components``, as legacy.py names them)."""
    state = _state(net, what)
    out: dict[str, torch.Tensor] = {}
    for item in state["variables"]:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise CheckpointError(f"{FORMAT}: {what} has a variable entry that is not a (name, array) pair")
        name, value = item
        if prefix + name in out:
            raise CheckpointError(f"{FORMAT}: {what} has the variable {prefix + name!r} twice")
        out[prefix + name] = _array(value, prefix + name, what)
    for key, comp in (state.get("components") or {}).items():
        out.update(tf_variables(comp, f"{what}/{key}", f"{prefix}{key}/"))
    return out


class _Kwargs:
    """A network's static kwargs: values with the graph function's defaults, checks, and the unknown ones."""

    def __init__(self, kwargs: dict[str, Any], what: str, known: tuple[str, ...]):
        self.kwargs, self.what, self.known = dict(kwargs), what, set(known)

    def get(self, name: str, default: Any) -> Any:
        """The kwarg as the graph function receives it: the file's value (None included) or the default."""
        return self.kwargs.get(name, default)

    def require(self, name: str, default: Any, allowed: Any, meaning: str = "") -> None:
        value = self.get(name, default)
        if isinstance(allowed, (list, tuple)):
            ok = isinstance(value, (list, tuple, np.ndarray)) and np.asarray(value).reshape(-1).tolist() == list(
                allowed
            )
        else:
            ok = value == allowed
        if not ok:
            raise CheckpointError(
                f"{FORMAT}: {self.what} has {name}={value!r}; pbw's StyleGAN2 implements only "
                f"{allowed!r}{meaning}; pbw reads {SUPPORTED_GRAPH}"
            )

    def agree(self, name: str, default: Any, found: Any, how: str) -> None:
        value = self.get(name, default)
        if value != found:
            source = "its static_kwargs" if name in self.kwargs else "networks_stylegan2.py's default"
            raise CheckpointError(f"{FORMAT}: {self.what}: {source} give {name}={value!r}, but {how} say {found!r}")

    def unknown(self) -> list[str]:
        return sorted(k for k in self.kwargs if k not in self.known)


def _check_conditional(kw: _Kwargs) -> None:
    label_size = kw.get("label_size", 0)
    if label_size:
        raise CheckpointError(
            f"{FORMAT}: {kw.what} is class-conditional (label_size={label_size}); pbw's StyleGAN2 is unconditional"
        )


def _check_common(kw: _Kwargs) -> list[str]:
    kw.require("nonlinearity", "lrelu", "lrelu")
    kw.require("resample_kernel", [1, 3, 3, 1], list(RESAMPLE_FILTER))
    kw.require("fmap_decay", 1.0, 1.0, " (widths fmap_base / resolution)")
    dtype = kw.get("dtype", "float32")
    if dtype not in ("float32", "float16"):
        raise CheckpointError(f"{FORMAT}: {kw.what} has dtype={dtype!r}")
    return [f"{kw.what} computed in {dtype} in TensorFlow; pbw computes in float32"] if dtype != "float32" else []


def _nf_widths(kw: _Kwargs, resolutions: list[int]) -> dict[int, int]:
    """The widths networks_stylegan2.py's nf() gives: clip(fmap_base / 2^(log2(res) - 1), fmap_min, fmap_max)."""
    base, fmin, fmax = kw.get("fmap_base", 16 << 10), kw.get("fmap_min", 1), kw.get("fmap_max", 512)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (base, fmin, fmax)):
        raise CheckpointError(f"{FORMAT}: {kw.what} has fmap_base={base!r}, fmap_min={fmin!r}, fmap_max={fmax!r}")
    return {res: int(np.clip(int(base / 2.0 ** (int(np.log2(res)) - 1)), fmin, fmax)) for res in resolutions}


def _resolutions(names, prefix: str, what: str) -> list[int]:
    found = set()
    for name in names:
        if name.startswith(prefix) and (m := _RES_SCOPE.match(name[len(prefix) :])):
            if m.group(1) != m.group(2):
                raise CheckpointError(f"{FORMAT}: {what} has a non-square scope {name!r}")
            found.add(int(m.group(1)))
    if not found:
        raise CheckpointError(f"{FORMAT}: {what} has no {prefix}<R>x<R>/ layers")
    top = max(found)
    expected = [2**i for i in range(2, int(np.log2(top)) + 1)]
    if sorted(found) != expected or top & (top - 1):
        raise CheckpointError(f"{FORMAT}: {what} has layers at resolutions {sorted(found)}, expected {expected}")
    return expected


# ---------------------------------------------------------------- generator
def _conv_weight(t: torch.Tensor) -> torch.Tensor:
    return t.permute(3, 2, 0, 1).contiguous()  # [kh, kw, in, out] -> [out, in, kh, kw]


def _modconv(r: StateReader, src: str, dst: str, out: dict, noise: str | None) -> None:
    out[f"{dst}.weight"] = _conv_weight(r.take(f"{src}/weight", ndim=4))
    out[f"{dst}.affine.weight"] = r.take(f"{src}/mod_weight", ndim=2).t().contiguous()
    out[f"{dst}.affine.bias"] = r.take(f"{src}/mod_bias", ndim=1) + 1
    out[f"{dst}.bias"] = r.take(f"{src}/bias", ndim=1)
    if noise is not None:
        out[f"{dst}.noise_strength"] = r.take(f"{src}/noise_strength", ndim=0)
        value = r.take(noise, ndim=4)
        if value.shape[:2] != (1, 1):
            raise CheckpointError(f"{FORMAT}: {r.what} {noise!r} has shape {tuple(value.shape)}, expected [1, 1, R, R]")
        out[f"{dst}.noise_const"] = value[0, 0]


def generator_from_tf(net: TFNetwork, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """pbw StyleGAN2Generator kwargs, state dict and notes from a pickled TF ``G_main`` network."""
    state = _expect_func(net, "G_main", what)
    components = state.get("components") or {}
    if sorted(components) != ["mapping", "synthesis"]:
        raise CheckpointError(f"{FORMAT}: {what} has components {sorted(components)}, expected mapping and synthesis")
    m_state = _expect_func(components["mapping"], "G_mapping", f"{what}/mapping")
    s_state = _expect_func(components["synthesis"], "G_synthesis_stylegan2", f"{what}/synthesis")
    main = _Kwargs(state["static_kwargs"], what, MAIN_RUNTIME + MAPPING_KWARGS + SYNTHESIS_KWARGS)
    mapping = _Kwargs(m_state["static_kwargs"], f"{what}/mapping", MAPPING_KWARGS + SYNTHESIS_KWARGS + MAIN_RUNTIME)
    synthesis = _Kwargs(s_state["static_kwargs"], f"{what}/synthesis", SYNTHESIS_KWARGS + MAPPING_KWARGS + MAIN_RUNTIME)
    for kw in (main, mapping):
        _check_conditional(kw)
    synthesis.require("architecture", "skip", "skip", " (config E/F's skip generator)")
    mapping.require("mapping_nonlinearity", "lrelu", "lrelu")
    mapping.require("normalize_latents", True, True)
    notes = _check_common(synthesis)
    if mapping.get("dtype", "float32") != synthesis.get("dtype", "float32"):
        raise CheckpointError(f"{FORMAT}: {what}'s mapping and synthesis differ in dtype")

    variables = tf_variables(net, what)
    r = StateReader(variables, FORMAT, what)
    out: dict[str, torch.Tensor] = {"mapping.w_avg": r.take("dlatent_avg", ndim=1)}
    r.take("lod", ndim=0)
    n_mapping = 0
    while f"mapping/Dense{n_mapping}/weight" in r:
        out[f"mapping.fc{n_mapping}.weight"] = r.take(f"mapping/Dense{n_mapping}/weight", ndim=2).t().contiguous()
        out[f"mapping.fc{n_mapping}.bias"] = r.take(f"mapping/Dense{n_mapping}/bias", ndim=1)
        n_mapping += 1
    if n_mapping == 0:
        raise CheckpointError(f"{FORMAT}: {what} has no mapping layers (mapping/Dense0/weight, ...)")
    resolutions = _resolutions(variables, "synthesis/", what)
    const = r.take("synthesis/4x4/Const/const", ndim=4)
    if const.shape[0] != 1:
        raise CheckpointError(f"{FORMAT}: {what} synthesis/4x4/Const/const has shape {tuple(const.shape)}")
    out["synthesis.b4.const"] = const[0]
    for res in resolutions:
        scope, block, log2 = f"synthesis/{res}x{res}", f"synthesis.b{res}", int(np.log2(res))
        if res == 4:
            _modconv(r, f"{scope}/Conv", f"{block}.conv1", out, noise="synthesis/noise0")
        else:
            _modconv(r, f"{scope}/Conv0_up", f"{block}.conv0", out, noise=f"synthesis/noise{2 * log2 - 5}")
            _modconv(r, f"{scope}/Conv1", f"{block}.conv1", out, noise=f"synthesis/noise{2 * log2 - 4}")
        _modconv(r, f"{scope}/ToRGB", f"{block}.torgb", out, noise=None)
    r.finish()

    top = resolutions[-1]
    z_dim, w_dim = int(out["mapping.fc0.weight"].shape[1]), int(out[f"mapping.fc{n_mapping - 1}.weight"].shape[0])
    for i in range(n_mapping):
        shape = tuple(out[f"mapping.fc{i}.weight"].shape)
        if shape[0] != w_dim or (i > 0 and shape[1] != w_dim):
            raise CheckpointError(
                f"{FORMAT}: {what} mapping/Dense{i} maps {shape[1]} -> {shape[0]} features; pbw's "
                f"mapping network keeps w_dim={w_dim} features in every layer (mapping_fmaps = "
                "dlatent_size)"
            )
    widths = {res: int(out[f"synthesis.b{res}.conv1.weight"].shape[0]) for res in resolutions}
    img_channels = int(out[f"synthesis.b{top}.torgb.weight"].shape[0])
    # The graph TF would build from the kwargs (or the graph functions' defaults) must fit the variables.
    synthesis.agree("resolution", 1024, top, "the synthesis variables")
    synthesis.agree("num_channels", 3, img_channels, "the ToRGB weights")
    synthesis.agree("dlatent_size", 512, w_dim, "the mapping weights")
    nf = _nf_widths(synthesis, resolutions)
    if nf != widths:
        raise CheckpointError(
            f"{FORMAT}: {what}/synthesis: fmap_base/fmap_min/fmap_max (static_kwargs or "
            f"networks_stylegan2.py's defaults) give widths {nf}, the variables {widths}"
        )
    mapping.agree("latent_size", 512, z_dim, "the mapping weights")
    mapping.agree("dlatent_size", 512, w_dim, "the mapping weights")
    mapping.agree("mapping_layers", 8, n_mapping, "the mapping variables")
    if n_mapping > 1:
        mapping.agree("mapping_fmaps", 512, w_dim, "the mapping weights")
    channel_base, channel_max = infer_channel_config(widths, FORMAT, f"{what} synthesis")
    lrmul = mapping.get("mapping_lrmul", 0.01)
    if isinstance(lrmul, bool) or not isinstance(lrmul, (int, float)) or lrmul <= 0:
        raise CheckpointError(f"{FORMAT}: {what}/mapping has mapping_lrmul={lrmul!r}")
    beta = main.get("dlatent_avg_beta", 0.995)  # None: not tracked
    kwargs = {
        "resolution": top,
        "z_dim": z_dim,
        "w_dim": w_dim,
        "mapping_layers": n_mapping,
        "mapping_lr_multiplier": float(lrmul),
        "channel_base": channel_base,
        "channel_max": channel_max,
        "w_avg_beta": 1.0 if beta is None else float(beta),
        "img_channels": img_channels,
    }
    psi = main.get("truncation_psi", 0.5)  # None: no truncation
    if psi is not None and psi != 1:
        notes.append(
            f"TensorFlow's G_main truncates with truncation_psi={psi} unless told otherwise; pbw loads "
            f"truncation_psi=1.0 (pass truncation_psi={psi} to match)"
        )
    ignored = sorted(set(main.unknown()) | set(mapping.unknown()) | set(synthesis.unknown()))
    if ignored:
        notes.append(f"{what} static kwargs the graph functions ignore: {', '.join(ignored)}")
    return kwargs, out, notes


# ---------------------------------------------------------------- discriminator
def discriminator_from_tf(net: TFNetwork, what: str = "D") -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """pbw StyleGAN2Discriminator kwargs, state dict and notes from a pickled TF ``D_stylegan2`` network."""
    state = _expect_func(net, "D_stylegan2", what)
    if state.get("components"):
        raise CheckpointError(f"{FORMAT}: {what} has components {sorted(state['components'])}; D_stylegan2 has none")
    kw = _Kwargs(state["static_kwargs"], what, D_KWARGS)
    _check_conditional(kw)
    kw.require("architecture", "resnet", "resnet", " (config E/F's residual discriminator)")
    notes = _check_common(kw)
    group_size, num_features = kw.get("mbstd_group_size", 4), kw.get("mbstd_num_features", 1)
    if not isinstance(group_size, int) or not isinstance(num_features, int) or group_size <= 1 or num_features < 1:
        raise CheckpointError(
            f"{FORMAT}: {what} has mbstd_group_size={group_size!r}, mbstd_num_features="
            f"{num_features!r}; pbw's discriminator needs a minibatch stddev layer (a group size "
            "above 1, at least one feature)"
        )

    variables = tf_variables(net, what)
    r = StateReader(variables, FORMAT, what)
    resolutions = _resolutions(variables, "", what)
    top = resolutions[-1]
    out: dict[str, torch.Tensor] = {}

    def conv(src: str, dst: str, bias: bool = True) -> None:
        out[f"{dst}.weight"] = _conv_weight(r.take(f"{src}/weight", ndim=4))
        if bias:
            out[f"{dst}.bias"] = r.take(f"{src}/bias", ndim=1)

    conv(f"{top}x{top}/FromRGB", f"b{top}.fromrgb")
    for res in reversed(resolutions[1:]):
        conv(f"{res}x{res}/Conv0", f"b{res}.conv0")
        conv(f"{res}x{res}/Conv1_down", f"b{res}.conv1")
        conv(f"{res}x{res}/Skip", f"b{res}.skip", bias=False)
    conv("4x4/Conv", "b4.conv")
    for src, dst in (("4x4/Dense0", "b4.fc"), ("Output", "b4.out")):
        out[f"{dst}.weight"] = r.take(f"{src}/weight", ndim=2).t().contiguous()
        out[f"{dst}.bias"] = r.take(f"{src}/bias", ndim=1)
    r.finish()

    widths = {res: int(out[f"b{res}.conv0.weight"].shape[0]) for res in resolutions[1:]}
    widths[4] = int(out["b4.conv.weight"].shape[0])
    nf = _nf_widths(kw, resolutions)
    if nf != widths:
        raise CheckpointError(
            f"{FORMAT}: {what}: fmap_base/fmap_min/fmap_max (static_kwargs or networks_stylegan2.py's "
            f"defaults) give widths {nf}, the variables {widths}"
        )
    if out["b4.fc.weight"].shape[0] != widths[4] or out["b4.out.weight"].shape[0] != 1:
        raise CheckpointError(
            f"{FORMAT}: {what} 4x4/Dense0 has {out['b4.fc.weight'].shape[0]} features and Output "
            f"{out['b4.out.weight'].shape[0]}; pbw's epilogue has {widths[4]} (the 4x4 conv's) and 1"
        )
    img_channels = int(out[f"b{top}.fromrgb.weight"].shape[1])
    kw.agree("resolution", 1024, top, "the variables")
    kw.agree("num_channels", 3, img_channels, "the FromRGB weights")
    channel_base, channel_max = infer_channel_config(widths, FORMAT, what)
    kwargs = {
        "resolution": top,
        "channel_base": channel_base,
        "channel_max": channel_max,
        "mbstd_group_size": int(group_size),
        "mbstd_num_channels": int(num_features),
        "img_channels": img_channels,
    }
    if kw.unknown():
        notes.append(f"{what} static kwargs D_stylegan2 ignores: {', '.join(kw.unknown())}")
    return kwargs, out, notes


# ---------------------------------------------------------------- the file
def read_tf_pickle_data(data: Any, path: str | Path) -> ImportedNetworks:
    """An unpickled TF pickle: NVIDIA's (G, D, Gs) tuple, or a lone G_main generator network."""
    if isinstance(data, TFNetwork):
        kwargs, state, notes = generator_from_tf(data, "the generator")
        return ImportedNetworks(
            FORMAT,
            "stylegan2",
            kwargs,
            {"generator_ema": state},
            notes=notes + ["a lone generator network, read as the EMA generator"],
        )
    if not (isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data)):
        kinds = [type(x).__name__ for x in data]
        raise CheckpointError(f"{path}: a TensorFlow network pickle, but not NVIDIA's (G, D, Gs) tuple (found {kinds})")
    g, d, gs = data
    gs_kwargs, gs_state, notes = generator_from_tf(gs, "Gs")
    g_kwargs, g_state, g_notes = generator_from_tf(g, "G")
    if g_kwargs != gs_kwargs:
        raise CheckpointError(f"{FORMAT}: G and Gs differ in architecture: {g_kwargs} vs {gs_kwargs}")
    d_kwargs, d_state, d_notes = discriminator_from_tf(d, "D")
    notes += [n for n in g_notes + d_notes if n not in notes]
    return ImportedNetworks(
        FORMAT, "stylegan2", gs_kwargs, {"generator_ema": gs_state, "generator": g_state}, d_kwargs, d_state, notes
    )
