"""NVIDIA's original TensorFlow StyleGAN2 pickles: (G, D, Gs) of ``dnnlib.tflib.network.Network``.

The fixtures are written here from NVIDIA's code, not from a pbw exporter: variable names, shapes
and the order they are created in follow NVlabs/stylegan2 ``training/networks_stylegan2.py``
(``G_main``, ``G_mapping``, ``G_synthesis_stylegan2``, ``D_stylegan2``), the pickled state follows
``dnnlib/tflib/network.py`` (``Network.__getstate__``, version 4; pickled by ``training/misc.py``
``save_pkl`` at the highest protocol), and the values are random. The forward checks compare pbw
with a reference of the TF graph written below from those files and ``dnnlib/tflib/ops/upfirdn_2d.py``
(``_upfirdn_2d_ref``, ``upsample_conv_2d``, ``conv_downsample_2d``, ``upsample_2d``) and from
TensorFlow's definitions of ``conv2d`` (a correlation) and ``conv2d_transpose`` (its adjoint, which
scatters every input pixel times the filter), on the variables in TF's own layout.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from pbw.checkpoints import CheckpointError, UnsafePickleError, load_generator, read_checkpoint
from pbw.checkpoints.__main__ import main as cli_main
from pbw.checkpoints.safe_pickle import safe_load
from pbw.models.stylegan2 import StyleGAN2Generator

# A config-f network scaled down: fmap_base 128 / fmap_max 32 give widths 32, 32, 16, 8 at 4..32 px.
CFG = dict(
    resolution=32, latent_size=16, dlatent_size=16, mapping_layers=2, mapping_fmaps=16, fmap_base=128, fmap_max=32
)
MODULE_SRC = """# training/networks_stylegan2.py, as dnnlib.tflib embeds it in every network pickle
import pathlib
pathlib.Path({marker!r}).write_text("the pickle's code ran")
"""


# ---------------------------------------------------------------- the pickle, as dnnlib.tflib writes it
@contextlib.contextmanager
def tf_modules():
    """`dnnlib`, `dnnlib.tflib` and `dnnlib.tflib.network` stand-ins, in sys.modules only inside the block.

    Their `Network` pickles as dnnlib.tflib's does (`__getstate__` returns the state dict) and, like
    dnnlib.tflib's `__setstate__`, first executes the `build_module_src` it carries."""
    network = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, state):
            self.state = state

        def __getstate__(self):
            return self.state

        def __setstate__(self, state):
            exec(state["build_module_src"], types.ModuleType("_tflib_network_import").__dict__)
            self.state = state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    network.Network = Network
    names = {
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
        "dnnlib.tflib.network": network,
    }
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(names)
    try:
        yield Network
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def nf(stage, cfg):
    """networks_stylegan2.py's nf(): clip(fmap_base / 2^stage, fmap_min=1, fmap_max)."""
    return int(np.clip(int(cfg["fmap_base"] / 2.0**stage), 1, cfg["fmap_max"]))


def generator_variables(rng, cfg, lrmul=0.01):
    """(own, mapping, synthesis) variable lists of a G_main network, in TF's creation order."""

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    own = [("lod", np.float32(0)), ("dlatent_avg", normal(cfg["dlatent_size"], scale=0.5))]
    mapping = []
    features = [cfg["latent_size"]] + [cfg["mapping_fmaps"]] * (cfg["mapping_layers"] - 1) + [cfg["dlatent_size"]]
    for i in range(cfg["mapping_layers"]):  # get_weight: N(0, 1 / lrmul)
        mapping += [
            (f"Dense{i}/weight", normal(features[i], features[i + 1], scale=1 / lrmul)),
            (f"Dense{i}/bias", normal(features[i + 1], scale=0.2 / lrmul)),
        ]
    log2 = int(np.log2(cfg["resolution"]))
    num_layers = 2 * log2 - 2
    synthesis = [(f"noise{i}", normal(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2))) for i in range(num_layers - 1)]
    w = cfg["dlatent_size"]

    def layer(scope, fin, fout, k=3, noise=True):
        out = [
            (f"{scope}/weight", normal(k, k, fin, fout)),
            (f"{scope}/mod_weight", normal(w, fin)),
            (f"{scope}/mod_bias", normal(fin, scale=0.2)),
        ]
        out += [(f"{scope}/noise_strength", np.float32(rng.standard_normal() * 0.3))] if noise else []
        return out + [(f"{scope}/bias", normal(fout, scale=0.2))]

    synthesis += [("4x4/Const/const", normal(1, nf(1, cfg), 4, 4))]
    synthesis += layer("4x4/Conv", nf(1, cfg), nf(1, cfg)) + layer("4x4/ToRGB", nf(1, cfg), 3, k=1, noise=False)
    for res in range(3, log2 + 1):
        scope = f"{2**res}x{2**res}"
        synthesis += layer(f"{scope}/Conv0_up", nf(res - 2, cfg), nf(res - 1, cfg))
        synthesis += layer(f"{scope}/Conv1", nf(res - 1, cfg), nf(res - 1, cfg))
        synthesis += layer(f"{scope}/ToRGB", nf(res - 1, cfg), 3, k=1, noise=False)
    return own, mapping, synthesis


def discriminator_variables(rng, cfg, mbstd_features=1):
    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    log2 = int(np.log2(cfg["resolution"]))
    top = f"{2**log2}x{2**log2}"
    out = [
        (f"{top}/FromRGB/weight", normal(1, 1, 3, nf(log2 - 1, cfg))),
        (f"{top}/FromRGB/bias", normal(nf(log2 - 1, cfg), scale=0.2)),
    ]
    for res in range(log2, 2, -1):
        scope = f"{2**res}x{2**res}"
        out += [
            (f"{scope}/Conv0/weight", normal(3, 3, nf(res - 1, cfg), nf(res - 1, cfg))),
            (f"{scope}/Conv0/bias", normal(nf(res - 1, cfg), scale=0.2)),
            (f"{scope}/Conv1_down/weight", normal(3, 3, nf(res - 1, cfg), nf(res - 2, cfg))),
            (f"{scope}/Conv1_down/bias", normal(nf(res - 2, cfg), scale=0.2)),
            (f"{scope}/Skip/weight", normal(1, 1, nf(res - 1, cfg), nf(res - 2, cfg))),
        ]
    out += [
        ("4x4/Conv/weight", normal(3, 3, nf(1, cfg) + mbstd_features, nf(1, cfg))),
        ("4x4/Conv/bias", normal(nf(1, cfg), scale=0.2)),
        ("4x4/Dense0/weight", normal(nf(1, cfg) * 16, nf(0, cfg))),
        ("4x4/Dense0/bias", normal(nf(0, cfg), scale=0.2)),
        ("Output/weight", normal(nf(0, cfg), 1)),
        ("Output/bias", normal(1, scale=0.2)),
    ]
    return out


def state(name, func, kwargs, variables, components=None, src=""):
    """Network.__getstate__'s dict (version 4)."""
    return dict(
        version=4,
        name=name,
        static_kwargs=dict(kwargs),
        components=components or {},
        build_module_src=src,
        build_func_name=func,
        variables=list(variables),
    )


def tf_states(seed=0, cfg=CFG, lrmul=None, src="", mbstd=None):
    """States of (G, D, Gs) as training_loop.py creates them (G/D static kwargs: num_channels, resolution,
    label_size and the config's), Gs = G.clone('Gs') with its own values."""
    rng = np.random.default_rng(seed)
    kwargs = dict(num_channels=3, label_size=0, **cfg, **({"mapping_lrmul": lrmul} if lrmul else {}))
    nets = []
    for name, suffix in (("G", ""), ("Gs", "_1")):
        own, mapping, synthesis = generator_variables(rng, cfg, lrmul or 0.01)
        components = {
            "synthesis": state(f"G_synthesis{suffix}", "G_synthesis_stylegan2", kwargs, synthesis, src=src),
            "mapping": state(
                f"G_mapping{suffix}",
                "G_mapping",
                dict(kwargs, dlatent_broadcast=2 * int(np.log2(cfg["resolution"])) - 2),
                mapping,
                src=src,
            ),
        }
        nets.append(state(name, "G_main", kwargs, own, components, src=src))
    d_kwargs = {
        k: v
        for k, v in kwargs.items()
        if k not in ("latent_size", "dlatent_size", "mapping_layers", "mapping_fmaps", "mapping_lrmul")
    }
    if mbstd:  # (group size, features)
        d_kwargs.update(mbstd_group_size=mbstd[0], mbstd_num_features=mbstd[1])
    d = state("D", "D_stylegan2", d_kwargs, discriminator_variables(rng, cfg, mbstd[1] if mbstd else 1), src=src)
    return nets[0], d, nets[1]


def write_tf_pickle(path, g, d, gs, protocol=4):
    """pickle.dump((G, D, Gs)) of dnnlib.tflib Networks holding these states (training/misc.py save_pkl)."""
    with tf_modules() as network:

        def make(s):
            return network(dict(s, components={k: make(c) for k, c in s["components"].items()}))

        with open(path, "wb") as f:
            pickle.dump((make(g), make(d), make(gs)), f, protocol=protocol)


def tf_params(s, prefix=""):
    """Every variable by its path through the components (legacy.py's _collect_tf_params naming)."""
    out = {prefix + name: value for name, value in s["variables"]}
    for key, comp in s["components"].items():
        out.update(tf_params(comp, f"{prefix}{key}/"))
    return out


# ---------------------------------------------------------------- the TF graph, re-implemented
def t64(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def tf_conv2d_valid(x, w, stride=1):
    """tf.nn.conv2d(VALID), NCHW, filter [kh, kw, in, out]: out[p] = sum_k x[stride * p + k] * w[k] (a correlation)."""
    kh, kw = w.shape[:2]
    oh, ow = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = 0
    for dy in range(kh):
        for dx in range(kw):
            patch = x[:, :, dy : dy + stride * (oh - 1) + 1 : stride, dx : dx + stride * (ow - 1) + 1 : stride]
            out = out + torch.einsum("nihw,io->nohw", patch, w[dy, dx])
    return out


def tf_conv2d_same(x, w):
    p = (w.shape[0] - 1) // 2  # SAME, stride 1, odd kernel
    return tf_conv2d_valid(torch.nn.functional.pad(x, [p, p, p, p]), w)


def tf_conv2d_transpose(x, f, stride):
    """tf.nn.conv2d_transpose(VALID), filter [kh, kw, out, in]: the adjoint of conv2d, which adds
    x[p] * f[k] at output position stride * p + k."""
    n, _, h, w = x.shape
    kh, kw, o, _ = f.shape
    out = torch.zeros(n, o, (h - 1) * stride + kh, (w - 1) * stride + kw, dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            out[:, :, ky : ky + (h - 1) * stride + 1 : stride, kx : kx + (w - 1) * stride + 1 : stride] += torch.einsum(
                "nihw,oi->nohw", x, f[ky, kx]
            )
    return out


def tf_setup_kernel(k=(1, 3, 3, 1)):
    k = np.outer(k, k).astype(np.float64)
    return k / k.sum()


def tf_upfirdn_2d(x, k, up=1, down=1, pad0=0, pad1=0):
    """_upfirdn_2d_ref per channel: insert zeros, pad, conv2d with k[::-1, ::-1], keep every down-th pixel."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = torch.nn.functional.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n * c, 1, h * up, w * up)
    x = torch.nn.functional.pad(x, [pad0, pad1, pad0, pad1])
    x = tf_conv2d_valid(x, t64(k[::-1, ::-1].copy())[:, :, None, None])
    return x.reshape(n, c, *x.shape[2:])[:, :, ::down, ::down]


def tf_upsample_2d(x, factor=2):
    k = tf_setup_kernel() * factor**2
    p = k.shape[0] - factor
    return tf_upfirdn_2d(x, k, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def tf_upsample_conv_2d(x, w, factor=2):
    """upsample_conv_2d, one group: flip the kernel, swap in/out, conv2d_transpose, then the FIR."""
    k = tf_setup_kernel() * factor**2
    p = (k.shape[0] - factor) - (w.shape[1] - 1)
    w = w.flip([0, 1]).permute(0, 1, 3, 2)  # w[::-1, ::-1], [kh, kw, in, out] -> [kh, kw, out, in]
    x = tf_conv2d_transpose(x, w, factor)
    return tf_upfirdn_2d(x, k, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def tf_conv_downsample_2d(x, w, factor=2):
    k = tf_setup_kernel()
    p = (k.shape[0] - factor) + (w.shape[1] - 1)
    return tf_conv2d_valid(tf_upfirdn_2d(x, k, pad0=(p + 1) // 2, pad1=p // 2), w, stride=factor)


def tf_lrelu(x, b):
    """fused_bias_act(act='lrelu'): bias, leaky ReLU 0.2, gain sqrt(2)."""
    x = x + b.reshape(1, -1, *[1] * (x.ndim - 2))
    return torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2)


def get_weight(v, lrmul=1.0):
    """get_weight with use_wscale: the variable times lrmul * he_std, he_std = 1 / sqrt(fan_in)."""
    return t64(v) * (lrmul / math.sqrt(np.prod(np.shape(v)[:-1])))


def tf_modulated_conv(x, dlatent, p, scope, up=False, demodulate=True):
    """modulated_conv2d_layer (fused: one modulated kernel per sample), weight [k, k, in, out]."""
    w = get_weight(p[f"{scope}/weight"])
    s = dlatent @ get_weight(p[f"{scope}/mod_weight"]) + t64(p[f"{scope}/mod_bias"]) + 1
    outs = []
    for b in range(x.shape[0]):
        ww = w * s[b][None, None, :, None]
        if demodulate:
            ww = ww * torch.rsqrt(ww.square().sum(dim=[0, 1, 2]) + 1e-8)
        outs.append(tf_upsample_conv_2d(x[b : b + 1], ww) if up else tf_conv2d_same(x[b : b + 1], ww))
    return torch.cat(outs)


def tf_mapping(p, z, lrmul=0.01):
    x = t64(z)
    x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)
    i = 0
    while f"mapping/Dense{i}/weight" in p:
        x = tf_lrelu(x @ get_weight(p[f"mapping/Dense{i}/weight"], lrmul), t64(p[f"mapping/Dense{i}/bias"]) * lrmul)
        i += 1
    return x


def tf_synthesis(p, dlatents):
    """G_synthesis_stylegan2, architecture 'skip', randomize_noise=False (the stored noise inputs)."""

    def layer(x, idx, scope, up=False):
        x = tf_modulated_conv(x, dlatents[:, idx], p, f"synthesis/{scope}", up=up)
        x = x + t64(p[f"synthesis/noise{idx}"]) * float(p[f"synthesis/{scope}/noise_strength"])
        return tf_lrelu(x, t64(p[f"synthesis/{scope}/bias"]))

    def torgb(x, y, res):
        scope = f"synthesis/{2**res}x{2**res}/ToRGB"
        t = tf_modulated_conv(x, dlatents[:, res * 2 - 3], p, scope, demodulate=False)
        t = t + t64(p[f"{scope}/bias"]).reshape(1, -1, 1, 1)
        return t if y is None else y + t

    x = t64(p["synthesis/4x4/Const/const"]).repeat(dlatents.shape[0], 1, 1, 1)
    x = layer(x, 0, "4x4/Conv")
    y = torgb(x, None, 2)
    log2 = int(np.log2(max(int(k.split("/")[1].split("x")[0]) for k in p if k.endswith("/ToRGB/weight"))))
    for res in range(3, log2 + 1):
        scope = f"{2**res}x{2**res}"
        x = layer(x, res * 2 - 5, f"{scope}/Conv0_up", up=True)
        x = layer(x, res * 2 - 4, f"{scope}/Conv1")
        y = torgb(x, tf_upsample_2d(y), res)
    return y


def tf_discriminator(p, img, group_size=4, num_features=1):
    """D_stylegan2, architecture 'resnet', label_size 0."""

    def conv(x, scope, act=True):
        out = tf_conv2d_same(x, get_weight(p[f"{scope}/weight"]))
        return tf_lrelu(out, t64(p[f"{scope}/bias"])) if act else out

    log2 = int(np.log2(img.shape[-1]))
    x = conv(t64(img), f"{2**log2}x{2**log2}/FromRGB")
    for res in range(log2, 2, -1):
        scope = f"{2**res}x{2**res}"
        t = x
        x = conv(x, f"{scope}/Conv0")
        x = tf_lrelu(
            tf_conv_downsample_2d(x, get_weight(p[f"{scope}/Conv1_down/weight"])), t64(p[f"{scope}/Conv1_down/bias"])
        )
        t = tf_conv_downsample_2d(t, get_weight(p[f"{scope}/Skip/weight"]))
        x = (x + t) * (1 / np.sqrt(2))
    # minibatch_stddev_layer
    g = min(group_size, x.shape[0])
    n, c, h, w = x.shape
    y = x.reshape(g, -1, num_features, c // num_features, h, w)
    y = y - y.mean(dim=0, keepdim=True)
    y = torch.sqrt(y.square().mean(dim=0) + 1e-8)
    y = y.mean(dim=[2, 3, 4], keepdim=True).mean(dim=2)
    x = torch.cat([x, y.repeat(g, 1, h, w)], dim=1)
    x = conv(x, "4x4/Conv")
    x = tf_lrelu(x.reshape(n, -1) @ get_weight(p["4x4/Dense0/weight"]), t64(p["4x4/Dense0/bias"]))
    return x @ get_weight(p["Output/weight"]) + t64(p["Output/bias"])


# ---------------------------------------------------------------- (a) names and shapes
# NVIDIA's own TF -> PyTorch naming (stylegan2-ada-pytorch legacy.py), which pbw's module names follow.
def expected_generator_names(cfg=CFG):
    names = {"dlatent_avg": "mapping.w_avg"}
    for i in range(cfg["mapping_layers"]):
        names.update(
            {f"mapping/Dense{i}/weight": f"mapping.fc{i}.weight", f"mapping/Dense{i}/bias": f"mapping.fc{i}.bias"}
        )
    names["synthesis/4x4/Const/const"] = "synthesis.b4.const"
    log2 = int(np.log2(cfg["resolution"]))
    layers = [("4x4/Conv", "b4.conv1", 0), ("4x4/ToRGB", "b4.torgb", None)]
    for res in range(3, log2 + 1):
        r = 2**res
        layers += [
            (f"{r}x{r}/Conv0_up", f"b{r}.conv0", 2 * res - 5),
            (f"{r}x{r}/Conv1", f"b{r}.conv1", 2 * res - 4),
            (f"{r}x{r}/ToRGB", f"b{r}.torgb", None),
        ]
    for scope, dst, noise in layers:
        pairs = {"weight": "weight", "mod_weight": "affine.weight", "mod_bias": "affine.bias", "bias": "bias"}
        if noise is not None:
            pairs["noise_strength"] = "noise_strength"
            names[f"synthesis/noise{noise}"] = f"synthesis.{dst}.noise_const"
        names.update({f"synthesis/{scope}/{a}": f"synthesis.{dst}.{b}" for a, b in pairs.items()})
    return names


def expected_discriminator_names(cfg=CFG):
    log2 = int(np.log2(cfg["resolution"]))
    top = 2**log2
    names = {f"{top}x{top}/FromRGB/{v}": f"b{top}.fromrgb.{v}" for v in ("weight", "bias")}
    for res in range(log2, 2, -1):
        r = 2**res
        names.update({f"{r}x{r}/Conv0/{v}": f"b{r}.conv0.{v}" for v in ("weight", "bias")})
        names.update({f"{r}x{r}/Conv1_down/{v}": f"b{r}.conv1.{v}" for v in ("weight", "bias")})
        names[f"{r}x{r}/Skip/weight"] = f"b{r}.skip.weight"
    for src, dst in (("4x4/Conv", "b4.conv"), ("4x4/Dense0", "b4.fc"), ("Output", "b4.out")):
        names.update({f"{src}/{v}": f"{dst}.{v}" for v in ("weight", "bias")})
    return names


def fingerprint(values, shift=0.0):
    """The sorted values: the same for any transpose, reshape or flip of a tensor."""
    return tuple(np.sort(np.asarray(values, dtype=np.float64).reshape(-1) + shift).round(5))


def assert_each_variable_used_once(tf_state, pbw_state, expected):
    variables = tf_params(tf_state)
    by_print = {}
    for name, value in variables.items():
        by_print.setdefault(fingerprint(value, 1.0 if name.endswith("mod_bias") else 0.0), []).append(name)
    placed = {}
    for key, tensor in pbw_state.items():
        sources = by_print.get(fingerprint(tensor.numpy()), [])
        assert len(sources) == 1, (key, sources)  # random values: one variable per tensor
        placed[sources[0]] = key
    assert placed == expected  # every variable but lod placed once, under NVIDIA's name for it
    assert set(variables) - set(placed) <= {"lod"}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_tf_pickle_places_every_variable_once(tmp_path, protocol):
    g, d, gs = tf_states(seed=1)
    path = tmp_path / "stylegan2-tiny-config-f.pkl"
    write_tf_pickle(path, g, d, gs, protocol=protocol)
    imported = read_checkpoint(path)
    assert imported.format == "NVIDIA StyleGAN2 TensorFlow pickle" and imported.family == "stylegan2"
    assert imported.generator_kwargs == dict(
        resolution=32,
        z_dim=16,
        w_dim=16,
        mapping_layers=2,
        mapping_lr_multiplier=0.01,
        channel_base=256,
        channel_max=32,
        w_avg_beta=0.995,
        img_channels=3,
    )
    assert imported.discriminator_kwargs == dict(
        resolution=32, channel_base=256, channel_max=32, mbstd_group_size=4, mbstd_num_channels=1, img_channels=3
    )
    assert_each_variable_used_once(gs, imported.generators["generator_ema"], expected_generator_names())
    assert_each_variable_used_once(g, imported.generators["generator"], expected_generator_names())
    assert_each_variable_used_once(d, imported.discriminator, expected_discriminator_names())
    # Layouts: [kh, kw, in, out] -> [out, in, kh, kw]; dense [in, out] -> [out, in]; noise [1, 1, R, R] -> [R, R].
    sd, p = imported.generators["generator_ema"], tf_params(gs)
    assert torch.equal(
        sd["synthesis.b16.conv0.weight"], t64(p["synthesis/16x16/Conv0_up/weight"]).float().permute(3, 2, 0, 1)
    )
    assert torch.equal(sd["mapping.fc1.weight"], t64(p["mapping/Dense1/weight"]).float().t())
    assert torch.equal(sd["synthesis.b8.conv1.noise_const"], t64(p["synthesis/noise2"]).float()[0, 0])
    assert torch.equal(sd["synthesis.b8.torgb.affine.bias"], t64(p["synthesis/8x8/ToRGB/mod_bias"]).float() + 1)


def expect_error(tmp_path, match, g=None, d=None, gs=None, **kwargs):
    g0, d0, gs0 = tf_states(seed=2)
    path = tmp_path / "bad.pkl"
    write_tf_pickle(path, g or g0, d or d0, gs or gs0)
    with pytest.raises(CheckpointError, match=match):
        load_generator(path, **kwargs)


def edit_vars(s, fn, component=None):
    """A copy of state `s` whose (component's) variable list is fn(list)."""
    if component is None:
        return dict(s, variables=fn(list(s["variables"])))
    return dict(s, components=dict(s["components"], **{component: edit_vars(s["components"][component], fn)}))


def test_tf_pickle_errors(tmp_path):
    g, d, gs = tf_states(seed=2)
    # Unknown, missing, misshapen variables.
    expect_error(
        tmp_path,
        r"cannot place: \['synthesis/8x8/Conv1/extra'\]",
        gs=edit_vars(gs, lambda v: v + [("8x8/Conv1/extra", np.zeros(3, np.float32))], "synthesis"),
    )
    expect_error(
        tmp_path,
        r"Gs has no 'synthesis/noise3'",
        gs=edit_vars(gs, lambda v: [x for x in v if x[0] != "noise3"], "synthesis"),
    )
    expect_error(
        tmp_path,
        r"cannot place: \['Output/extra'\]",
        d=edit_vars(d, lambda v: v + [("Output/extra", np.zeros(1, np.float32))]),
    )
    expect_error(
        tmp_path,
        r"'synthesis/noise0' has shape \(2, 1, 4, 4\)",
        gs=edit_vars(
            gs, lambda v: [(n, np.zeros((2, 1, 4, 4), np.float32) if n == "noise0" else a) for n, a in v], "synthesis"
        ),
    )
    expect_error(tmp_path, r"'dlatent_avg' is a str", gs=edit_vars(gs, lambda v: [("lod", 0.0), ("dlatent_avg", "x")]))
    # Architectures pbw does not implement, named by their build functions and kwargs.
    skip_d = dict(d, static_kwargs=dict(d["static_kwargs"], architecture="skip"))
    expect_error(tmp_path, r"D has architecture='skip'; pbw's StyleGAN2 implements only 'resnet'", d=skip_d)
    resnet_g = dict(
        gs,
        components=dict(
            gs["components"],
            synthesis=dict(gs["components"]["synthesis"], static_kwargs=dict(CFG, architecture="resnet")),
        ),
    )
    expect_error(tmp_path, r"Gs/synthesis has architecture='resnet'", gs=resnet_g)
    expect_error(
        tmp_path, r"D \('D'\) is built by 'D_stylegan', a StyleGAN2 config B-D", d=dict(d, build_func_name="D_stylegan")
    )
    ada = dict(
        gs,
        components=dict(gs["components"], synthesis=dict(gs["components"]["synthesis"], build_func_name="G_synthesis")),
    )
    expect_error(tmp_path, r"'G_synthesis', a StyleGAN \(2019\) or StyleGAN2-ADA", gs=ada)
    expect_error(tmp_path, r"is built by 'G_style'", g=dict(g, build_func_name="G_style"))
    cond = dict(gs, static_kwargs=dict(gs["static_kwargs"], label_size=10))
    expect_error(tmp_path, r"class-conditional \(label_size=10\)", gs=cond)
    expect_error(
        tmp_path,
        r"mbstd_group_size=0, mbstd_num_features=1; pbw's discriminator needs a minibatch",
        d=dict(d, static_kwargs=dict(d["static_kwargs"], mbstd_group_size=0)),
    )
    # The static kwargs must describe the graph the variables belong to.
    wide = dict(
        gs,
        components=dict(
            gs["components"], synthesis=dict(gs["components"]["synthesis"], static_kwargs=dict(CFG, fmap_base=256))
        ),
    )
    expect_error(
        tmp_path,
        r"give widths \{4: 32, 8: 32, 16: 32, 32: 16\}, the variables \{4: 32, 8: 32, 16: 16, "
        r"32: 8\}",
        gs=wide,
    )
    no_res = dict(
        gs,
        components=dict(
            gs["components"],
            synthesis=dict(
                gs["components"]["synthesis"], static_kwargs={k: v for k, v in CFG.items() if k != "resolution"}
            ),
        ),
    )
    expect_error(
        tmp_path, r"networks_stylegan2.py's default give resolution=1024, but the synthesis variables say 32", gs=no_res
    )
    # An override contradicting the shapes, and a file that is not (G, D, Gs).
    expect_error(tmp_path, r"TensorFlow pickle: the generator_ema weights do not fit.*shape mismatch", channel_base=512)
    with tf_modules() as network:
        data = pickle.dumps((network(g), "not a network"))
    (tmp_path / "odd.pkl").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"not NVIDIA's \(G, D, Gs\) tuple"):
        load_generator(tmp_path / "odd.pkl")


def test_a_lone_generator_network(tmp_path):
    """pickle.dump(Gs) alone (as some third-party files are): read as the EMA generator, no D."""
    g, d, gs = tf_states(seed=7)
    with tf_modules() as network:
        data = pickle.dumps(
            network(dict(gs, components={k: network(c) for k, c in gs["components"].items()})), protocol=4
        )
    (tmp_path / "gs.pkl").write_bytes(data)
    imported = read_checkpoint(tmp_path / "gs.pkl")
    assert sorted(imported.generators) == ["generator_ema"] and imported.discriminator is None
    assert "a lone generator network" in " ".join(imported.notes)
    assert_each_variable_used_once(gs, imported.generators["generator_ema"], expected_generator_names())


# ---------------------------------------------------------------- (b) the forward of the TF graph
@pytest.mark.parametrize("lrmul, mbstd", [(None, None), (0.1, (2, 2))])
def test_tf_pickle_renders_the_tf_graphs_images(tmp_path, lrmul, mbstd):
    g, d, gs = tf_states(seed=3, lrmul=lrmul, mbstd=mbstd)
    path = tmp_path / "tiny.pkl"
    write_tf_pickle(path, g, d, gs)
    loaded = load_generator(path)
    p = tf_params(gs)
    num_layers = 2 * int(np.log2(CFG["resolution"])) - 2
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w_ref = tf_mapping(p, z, lrmul or 0.01)
        img_ref = tf_synthesis(p, w_ref[:, None].repeat(1, num_layers, 1))
        assert img_ref.abs().mean() > 0.1
        torch.testing.assert_close(loaded.mapping(z)[:, 0].double(), w_ref, rtol=0, atol=1e-4)
        torch.testing.assert_close(loaded(z, noise_mode="const").double(), img_ref, rtol=0, atol=1e-4)
        # A different w per layer pins which dlatent each TF layer reads (layer_idx, res * 2 - 3 for ToRGB).
        ws = torch.randn(2, num_layers, 16, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(
            loaded.synthesis(ws, noise_mode="const").double(), tf_synthesis(p, ws.double()), rtol=0, atol=1e-4
        )
        assert torch.equal(loaded.mapping.w_avg, torch.from_numpy(p["dlatent_avg"]))
        img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(
            loaded.discriminator(img).double(),
            tf_discriminator(tf_params(d), img, *(mbstd or (4, 1))),
            rtol=0,
            atol=1e-4,
        )
        raw = load_generator(path, ema=False)  # G, not Gs
        torch.testing.assert_close(
            raw(z, noise_mode="const").double(),
            tf_synthesis(tf_params(g), tf_mapping(tf_params(g), z, lrmul or 0.01)[:, None].repeat(1, num_layers, 1)),
            rtol=0,
            atol=1e-4,
        )


def test_tf_conv_orientations_by_hand(tmp_path):
    """One nonzero tap w[a, b, in=1, out=0] of a TF kernel [kh, kw, in, out], one unit input pixel (i, j)
    in channel 1; everything lands in output channel 0.

    Conv1 (tf.nn.conv2d SAME, a correlation): out[y, x] = sum x[y + dy - 1, x + dx - 1] w[dy, dx], so the
    pixel lands at (i + 1 - a, j + 1 - b).
    Conv0_up (upsample_conv_2d): the kernel is flipped, f[ky, kx] = w[2 - ky, 2 - kx], nonzero at
    (2 - a, 2 - b); conv2d_transpose adds x[i, j] * f[ky, kx] at (2i + ky, 2j + kx) = (2i + 2 - a, 2j + 2 - b)
    = (r, c); the FIR (pads 1, 1; taps [1, 3, 3, 1] / 8 * 2 per axis, a convolution) spreads it over rows
    r - 2 ... r + 1 with weights [1, 3, 3, 1] / 4 (columns alike)."""
    g, d, gs = tf_states(seed=4)
    (a, b), (i, j) = (0, 2), (1, 1)

    def one_tap(v):
        out = []
        for name, value in v:
            if name in ("8x8/Conv0_up/weight", "8x8/Conv1/weight"):
                value = np.zeros_like(value)
                value[a, b, 1, 0] = 1
            out.append((name, value))
        return out

    path = tmp_path / "tap.pkl"
    write_tf_pickle(path, g, d, edit_vars(gs, one_tap, "synthesis"))
    block = load_generator(path).synthesis.b8
    with torch.no_grad():
        x = torch.zeros(1, 32, 8, 8)
        x[0, 1, i + 2, j + 2] = 1
        out = block.conv1._conv(x)[0]
        expected = torch.zeros_like(out)
        expected[0, i + 2 + 1 - a, j + 2 + 1 - b] = 1
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)

        x = torch.zeros(1, 32, 4, 4)
        x[0, 1, i, j] = 1
        out = block.conv0._conv(x)[0]
    spread = torch.tensor([0.25, 0.75, 0.75, 0.25])
    r, c = 2 * i + 2 - a, 2 * j + 2 - b
    expected = torch.zeros_like(out)
    expected[0, r - 2 : r + 2, c - 2 : c + 2] = spread.outer(spread)
    assert (r, c) == (4, 2)  # without the flip, (2i + a, 2j + b) = (2, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- (c) nothing in the file runs
def test_tf_pickle_loads_without_running_its_code(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    g, d, gs = tf_states(seed=5, src=MODULE_SRC.format(marker=str(marker)))
    path = tmp_path / "stylegan2-bedroom-config-f.pkl"
    write_tf_pickle(path, g, d, gs)
    loaded = load_generator(path)
    assert not marker.exists()  # the build_module_src of every network stayed a string
    assert isinstance(loaded, StyleGAN2Generator) and loaded.discriminator is not None
    with open(path, "rb") as f:
        records = safe_load(f)
    assert [r.state["name"] for r in records] == ["G", "D", "Gs"] and not marker.exists()
    assert records[2].state["build_module_src"] == MODULE_SRC.format(marker=str(marker))

    # Control: the payload is live. A plain unpickle with dnnlib.tflib importable runs it, as TF's would.
    with tf_modules(), open(path, "rb") as f:
        pickle.load(f)
    assert marker.read_text() == "the pickle's code ran"

    # The CLI: info and convert, and the converted file renders the same images.
    marker.unlink()
    assert cli_main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "NVIDIA StyleGAN2 TensorFlow pickle" in text and "channel_base=256" in text
    assert "truncation_psi=0.5 unless told otherwise" in text
    out = tmp_path / "bedroom.ckpt"
    assert cli_main(["convert", str(path), str(out)]) == 0
    assert "(generator, generator_ema, discriminator)" in capsys.readouterr().out and not marker.exists()
    converted = load_generator(out)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(converted(z, noise_mode="const"), loaded(z, noise_mode="const"))


def test_tf_pickle_with_a_code_global_is_refused(tmp_path):
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    g, d, gs = tf_states(seed=6)
    path = tmp_path / "evil.pkl"
    write_tf_pickle(path, g, d, dict(gs, static_kwargs=dict(gs["static_kwargs"], truncation_psi=Exploit())))
    with open(path, "rb") as f, pytest.raises(UnsafePickleError, match=r"global (posix|os|nt)\.system"):
        safe_load(f)
    with pytest.raises(CheckpointError, match=r"refused.*global (posix|os|nt)\.system.*could run code") as info:
        load_generator(path)
    assert isinstance(info.value.__cause__, UnsafePickleError)
    assert not marker.exists()

    # Any other dnnlib.tflib global (here tfutil.run) is refused too: only Network is a record.
    tfutil = types.ModuleType("dnnlib.tflib.tfutil")

    def run(*args):
        raise AssertionError("never called")

    run.__module__, run.__qualname__ = "dnnlib.tflib.tfutil", "run"
    tfutil.run = run
    with tf_modules() as network:
        sys.modules["dnnlib.tflib.tfutil"] = tfutil
        try:

            class Call:
                def __reduce__(self):
                    return run, ("x",)

            path.write_bytes(pickle.dumps((network(g), Call(), network(gs)), protocol=4))
        finally:
            del sys.modules["dnnlib.tflib.tfutil"]
    with pytest.raises(
        CheckpointError, match=r"dnnlib\.tflib\.tfutil\.run.*records of dnnlib\.tflib\.network\.Network"
    ):
        load_generator(path)


def test_a_pickle_cannot_alter_the_unpicklers_functions():
    """BUILD on an allowed global (here _codecs.encode, which protocol-2 pickles of numpy arrays use) would
    set attributes such as __defaults__ on pbw's rebuild function for the rest of the process."""
    import io

    from pbw.checkpoints import safe_pickle

    payload = b"c_codecs\nencode\n" + pickle.dumps((None, {"__defaults__": ("rot13",)}), protocol=0)[:-1] + b"b."
    with pytest.raises(UnsafePickleError, match="set attributes"):
        safe_load(io.BytesIO(payload))
    assert safe_pickle._latin1_encode.__defaults__ == ("utf-8",)
    # What protocol 2 writes for bytes, and protocol 5 for numpy arrays, still loads.
    for protocol in (2, 5):
        value = np.arange(6, dtype=np.float32).reshape(2, 3)
        assert np.array_equal(safe_load(io.BytesIO(pickle.dumps((b"\x00\xff", value), protocol=protocol)))[1], value)
