"""Checkpoint importers: NVIDIA pickles, rosinality .pt, pbw Lightning checkpoints, the CLI, errors.

Each fixture writer turns a small pbw StyleGAN2 into a file with the exact structure the public code
writes (key names, shapes, nesting, pickle layout); loading it must place every tensor and give the
same outputs as the model it was written from.
"""

from __future__ import annotations

import argparse
import collections
import math
import pickle
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pbw.checkpoints import CheckpointError, load_generator, read_checkpoint
from pbw.checkpoints.__main__ import main as cli_main
from pbw.checkpoints.safe_pickle import safe_load
from pbw.models.stylegan2 import ModulatedConv, StyleGAN2Discriminator, StyleGAN2Generator

G_KW = dict(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=32)
D_KW = dict(resolution=32, channel_base=256, channel_max=32)


def randomized(module: nn.Module, seed: int) -> nn.Module:
    """Give every tensor (biases, noise strengths, w_avg too) distinct random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            scale = 0.2 if name.endswith(("bias", "noise_strength", "w_avg")) else 1.0
            t.copy_(torch.randn(t.shape, generator=gen) * scale + (1.0 if name.endswith("affine.bias") else 0.0))
    return module.eval()


def tiny_models(seed=0, **g_overrides):
    torch.manual_seed(seed)
    g = randomized(StyleGAN2Generator(**{**G_KW, **g_overrides}), seed)
    g_ema = randomized(StyleGAN2Generator(**{**G_KW, **g_overrides}), seed + 1)
    d = randomized(StyleGAN2Discriminator(**D_KW, conv_clamp=g_overrides.get("conv_clamp")), seed + 2)
    return g, g_ema, d


def assert_same_state(a: nn.Module, b: nn.Module, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    sa = {k: v for k, v in sa.items() if not k.startswith("discriminator.")}  # the attached D is compared apart
    assert sa.keys() == sb.keys()
    for k in sa:
        if k not in skip:
            assert torch.equal(sa[k], sb[k]), k


def outputs(g: StyleGAN2Generator, n=2, seed=3):
    with torch.no_grad():
        w = g.encode(g.sample(n, seed=seed))
        return w, g.decode(w)


# ---------------------------------------------------------------- NVIDIA pickle fixture writer
MODULE_SRC_TEMPLATE = """# training/networks.py, as torch_utils.persistence embeds it in every network pickle
import pathlib
pathlib.Path({marker!r}).write_text("the pickle's code ran")
"""


@pytest.fixture
def nvidia_modules(monkeypatch):
    """Importable stand-ins for NVIDIA's `torch_utils.persistence` and `dnnlib.util`, as a plain
    unpickle of their pickles needs them. Like NVIDIA's, `_reconstruct_persistent_obj` first
    executes the module source carried by the pickle."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        module = types.ModuleType("_imported_module_test")
        exec(meta["module_src"], module.__dict__)  # what NVIDIA's loader does with the embedded source
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easydict
    for name, mod in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return persistence, easydict


class Persistent:
    """Pickles like a `@persistence.persistent_class` instance: reduce to
    `_reconstruct_persistent_obj(dict(type, version, module_src, class_name, state))`."""

    def __init__(self, class_name, state, module_src):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


NV_NAMES = {"StyleGAN2Generator": "Generator", "StyleGAN2Discriminator": "Discriminator"}
FILTER = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64


def nv_attributes(m: nn.Module, cls: str) -> dict:
    """The plain attributes NVIDIA's classes keep (the importer reads conv_clamp, gains, mbstd...)."""
    if cls == "FullyConnectedLayer":
        return dict(activation=m.activation, weight_gain=m.weight_gain, bias_gain=m.bias_gain)
    if cls in ("SynthesisLayer", "ToRGBLayer"):
        extra = (
            dict(weight_gain=m.style_gain)
            if cls == "ToRGBLayer"
            else dict(
                resolution=m.resolution, up=m.up, use_noise=True, activation="lrelu", padding=1, act_gain=math.sqrt(2)
            )
        )
        return dict(conv_clamp=m.conv_clamp, **extra)
    if cls == "Conv2dLayer":
        return dict(
            activation=m.activation,
            up=1,
            down=m.down,
            conv_clamp=m.conv_clamp,
            padding=m.padding,
            weight_gain=m.weight_gain,
            act_gain=math.sqrt(2) if m.activation == "lrelu" else 1.0,
        )
    if cls == "MappingNetwork":
        return dict(
            z_dim=m.z_dim, c_dim=0, w_dim=m.w_dim, num_ws=m.num_ws, num_layers=m.num_layers, w_avg_beta=m.w_avg_beta
        )
    if cls == "SynthesisBlock":
        return dict(
            in_channels=m.in_channels,
            resolution=m.resolution,
            img_channels=3,
            architecture="skip",
            use_fp16=False,
            channels_last=False,
            num_conv=m.num_conv,
            num_torgb=1,
        )
    if cls == "SynthesisNetwork":
        return dict(img_resolution=m.resolution, block_resolutions=m.block_resolutions, num_ws=m.num_ws)
    if cls == "Generator":
        return dict(z_dim=m.z_dim, c_dim=0, w_dim=m.w_dim, img_resolution=m.resolution, img_channels=3, num_ws=m.num_ws)
    if cls == "DiscriminatorBlock":
        return dict(in_channels=0 if hasattr(m, "fromrgb") else 1, architecture="resnet", use_fp16=False)
    if cls == "MinibatchStdLayer":
        return dict(group_size=m.group_size, num_channels=m.num_channels)
    if cls == "DiscriminatorEpilogue":
        return dict(cmap_dim=0, resolution=4, architecture="resnet")
    if cls == "Discriminator":
        return dict(c_dim=0, img_resolution=m.resolution, img_channels=3, block_resolutions=m.block_resolutions)
    raise AssertionError(cls)


def to_persistent(m: nn.Module, src: str, init_kwargs=None) -> Persistent:
    """The NVIDIA object tree for a pbw module: same children and tensors, NVIDIA class names, the
    `resample_filter` buffers NVIDIA keeps (and pbw does not), nn.Module internals as pickled."""
    cls = NV_NAMES.get(type(m).__name__, type(m).__name__)
    if isinstance(m, ModulatedConv):
        cls = "SynthesisLayer" if m.demodulate else "ToRGBLayer"
    params = collections.OrderedDict(
        (k, nn.Parameter(v.detach().clone(), requires_grad=False)) for k, v in m._parameters.items() if v is not None
    )
    if isinstance(m, ModulatedConv) and m.up > 1:  # NVIDIA's up-conv weight orientation (see nvidia.py)
        params["weight"] = nn.Parameter(params["weight"].flip([2, 3]), requires_grad=False)
    buffers = collections.OrderedDict(
        (k, v.clone()) for k, v in m._buffers.items() if k not in m._non_persistent_buffers_set
    )
    if cls in ("SynthesisLayer", "SynthesisBlock", "Conv2dLayer", "DiscriminatorBlock"):
        buffers["resample_filter"] = FILTER.clone()
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": collections.OrderedDict(),
        "_forward_hooks": collections.OrderedDict(),
        "_forward_pre_hooks": collections.OrderedDict(),
        "_state_dict_hooks": collections.OrderedDict(),
        "_load_state_dict_pre_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict((k, to_persistent(c, src)) for k, c in m._modules.items()),
        "_init_args": (),
        "_init_kwargs": init_kwargs or {},
        **nv_attributes(m, cls),
    }
    return Persistent(cls, state, src)


def write_nvidia_pickle(path, g, g_ema, d, marker, easydict, with_d=True):
    """A network-snapshot-*.pkl as stylegan2-ada-pytorch's training_loop.py writes it."""
    src = MODULE_SRC_TEMPLATE.format(marker=str(marker))
    g_init = easydict(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=32,
        img_channels=3,
        mapping_kwargs=easydict(num_layers=2),
        synthesis_kwargs=easydict(channel_base=256, channel_max=32, num_fp16_res=4, conv_clamp=256),
    )
    aug = Persistent(
        "AugmentPipe",
        {
            "training": False,
            "_parameters": collections.OrderedDict(),
            "_buffers": collections.OrderedDict(p=torch.tensor(0.12)),
            "_modules": {},
            "_init_kwargs": easydict(xflip=1, rotate90=1),
        },
        src,
    )
    data = dict(
        training_set_kwargs=dict(
            class_name="training.dataset.ImageFolderDataset",
            path="cub.zip",
            resolution=32,
            use_labels=False,
            max_size=11788,
            xflip=True,
        ),
        G=to_persistent(g, src, g_init),
        D=to_persistent(d, src) if with_d else None,
        G_ema=to_persistent(g_ema, src, g_init),
        augment_pipe=aug,
    )
    with open(path, "wb") as f:
        pickle.dump(data, f)


def test_nvidia_pickle_loads_identically_without_running_its_code(tmp_path, nvidia_modules):
    _, easydict = nvidia_modules
    g, g_ema, d = tiny_models(conv_clamp=256)
    marker, path = tmp_path / "PWNED", tmp_path / "network-snapshot-000100.pkl"
    write_nvidia_pickle(path, g, g_ema, d, marker, easydict)

    loaded = load_generator(path)
    assert not marker.exists()  # the embedded module source was never executed
    assert isinstance(loaded, StyleGAN2Generator)
    assert loaded.synthesis.b32.conv1.conv_clamp == 256 and loaded.mapping.w_avg_beta == 0.995
    assert_same_state(loaded.synthesis, g_ema.synthesis)  # G_ema preferred, every tensor placed
    assert_same_state(loaded.mapping, g_ema.mapping)
    (w_ref, img_ref), (w, img) = outputs(g_ema), outputs(loaded)
    assert torch.equal(w, w_ref) and torch.equal(img, img_ref)
    assert_same_state(loaded.discriminator, d)
    with torch.no_grad():
        assert torch.equal(loaded.discriminator(img_ref), d(img_ref))
    raw = load_generator(path, ema=False)
    assert_same_state(raw, g)

    # Control: the payload is live. A plain unpickle (what NVIDIA's legacy.load_network_pkl does) runs it.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.read_text() == "the pickle's code ran"


def test_nvidia_pickle_with_a_code_global_is_refused(tmp_path):
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Exploit()}))
    with pytest.raises(CheckpointError, match=r"global (posix|os|nt)\.system.*could run code"):
        load_generator(path)
    assert not marker.exists()


def test_nvidia_pickle_without_d_and_errors(tmp_path, nvidia_modules):
    _, easydict = nvidia_modules
    g, g_ema, d = tiny_models()
    path = tmp_path / "g_only.pkl"
    write_nvidia_pickle(path, g, g_ema, d, tmp_path / "m", easydict, with_d=False)
    loaded = load_generator(path, truncation_psi=0.5)
    assert loaded.discriminator is None and loaded.truncation_psi == 0.5
    assert loaded.synthesis.b4.conv1.conv_clamp is None

    # Truncated: a clear error, not a crash deep in pickle.
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_generator(cut)
    # Architecture mismatch: an override that contradicts the shapes names the format and the keys.
    with pytest.raises(CheckpointError, match=r"NVIDIA.*do not fit.*shape mismatch: synthesis\.b16\.conv0\.weight"):
        load_generator(path, channel_base=512)
    with pytest.raises(CheckpointError, match="no argument"):
        load_generator(path, not_an_argument=1)


def test_nvidia_conditional_and_stylegan3_networks_are_refused(tmp_path, nvidia_modules):
    _, easydict = nvidia_modules
    g, g_ema, d = tiny_models()
    path = tmp_path / "cond.pkl"
    cond = to_persistent(g_ema, "")
    cond.state["c_dim"] = 10
    with open(path, "wb") as f:
        pickle.dump({"G_ema": cond}, f)
    with pytest.raises(CheckpointError, match=r"class-conditional \(c_dim=10\)"):
        load_generator(path)
    sg3 = to_persistent(g_ema, "")
    synthesis = sg3.state["_modules"]["synthesis"]
    synthesis.state["_modules"] = collections.OrderedDict(input=None, L0_36_512=synthesis.state["_modules"]["b4"])
    with open(path, "wb") as f:
        pickle.dump({"G_ema": sg3}, f)
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_generator(path)


# A reference forward with NVIDIA's numerics (stylegan2-ada-pytorch training/networks.py and
# torch_utils/ops, eval in float32: fused modconv), on the tensors as the pickle stores them,
# independent of pbw's code. Pads are conv2d_resample's formulas for the 4-tap filter.
def nv_upfirdn(x, f, up=1, pad0=0, pad1=0, gain=1.0):
    """upfirdn2d for a 2-D filter: zero insertion, pad, true convolution with f * gain."""
    b, c, h, w = x.shape
    x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    return F.conv2d(x, (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def nv_act(x, bias, act, gain=1.0, clamp=None):
    """bias_act: bias, activation, activation gain (sqrt(2) for lrelu) * gain, clamp."""
    x = x + bias.view(1, -1, *[1] * (x.ndim - 2))
    x = F.leaky_relu(x, 0.2) * math.sqrt(2) * gain if act == "lrelu" else x * gain
    return x if clamp is None else x.clamp(-clamp * gain, clamp * gain)


def nv_fc(x, sd, p, lr=1.0, act="linear"):
    w = sd[f"{p}.weight"]
    return nv_act(x @ (w * (lr / math.sqrt(w.shape[1]))).t(), sd[f"{p}.bias"] * lr, act)


def nv_modulated_conv(x, sd, p, styles, up=1, demodulate=True):
    """modulated_conv2d, fused: per-sample modulated (and demodulated) weights, grouped conv."""
    weight = sd[f"{p}.weight"]
    (b, i), (o, _, k, _) = x.shape[:2], weight.shape
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum([2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, b * i, *x.shape[2:])
    if up == 1:  # flip_weight=True: conv2d's correlation, padding k // 2
        x = F.conv2d(x, w.reshape(b * o, i, k, k), padding=k // 2, groups=b)
    else:  # SynthesisLayer passes flip_weight=False and conv2d_resample inverts it for the transposed
        # conv: conv_transpose2d gets the weight as stored, then the FIR with the leftover padding.
        pad0 = k // 2 + (4 + up - 1) // 2 - (k - 1)
        pad1 = k // 2 + (4 - up) // 2 - (k - up)
        x = F.conv_transpose2d(x, w.transpose(1, 2).reshape(b * i, o, k, k), stride=up, groups=b)
        x = nv_upfirdn(x, sd[f"{p}.resample_filter"], 1, pad0, pad1, gain=up**2)
    return x.reshape(b, o, *x.shape[2:])


def nvidia_generator_forward(sd, z, clamp=None):
    """Generator(z, c=None, noise_mode='const') with the mapping lr multiplier 0.01."""
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for j in range(sum(k.endswith(".weight") for k in sd if k.startswith("mapping.fc"))):
        x = nv_fc(x, sd, f"mapping.fc{j}", lr=0.01, act="lrelu")
    resolutions = sorted({int(k.split(".")[1][1:]) for k in sd if k.startswith("synthesis.b")})
    ws, n, x, img = x, 0, sd["synthesis.b4.const"][None].repeat(len(z), 1, 1, 1), None
    for res in resolutions:
        blk = f"synthesis.b{res}"
        for name in ("conv1",) if res == 4 else ("conv0", "conv1"):
            p = f"{blk}.{name}"
            x = nv_modulated_conv(x, sd, p, nv_fc(ws, sd, f"{p}.affine"), up=2 if name == "conv0" else 1)
            x = nv_act(x + sd[f"{p}.noise_const"] * sd[f"{p}.noise_strength"], sd[f"{p}.bias"], "lrelu", clamp=clamp)
            n += 1
        if img is not None:  # upsample2d: up 2, pads ((4 + 1) // 2, (4 - 2) // 2), gain 4
            img = nv_upfirdn(img, sd[f"{blk}.resample_filter"], 2, 2, 1, gain=4)
        p = f"{blk}.torgb"
        styles = nv_fc(ws, sd, f"{p}.affine") / math.sqrt(sd[f"{p}.weight"][0].numel())
        y = nv_act(nv_modulated_conv(x, sd, p, styles, demodulate=False), sd[f"{p}.bias"], "linear", clamp=clamp)
        img = y if img is None else img + y
    return img


def nvidia_discriminator_forward(sd, img, clamp=None, group_size=4):
    """Discriminator(img, c=None), resnet architecture."""

    def conv(x, p, act="lrelu", down=1, gain=1.0):
        w = sd[f"{p}.weight"]
        k, w = w.shape[-1], w / math.sqrt(w[0].numel())
        if down > 1:  # conv2d_resample: FIR with pads k // 2 + ((4 - 2 + 1) // 2, (4 - 2) // 2), then stride 2
            x = nv_upfirdn(x, sd[f"{p}.resample_filter"], 1, k // 2 + 1, k // 2 + 1)
        x = F.conv2d(x, w, stride=down, padding=0 if down > 1 else k // 2)
        bias = sd.get(f"{p}.bias", torch.zeros(x.shape[1]))
        return nv_act(x, bias, act, gain, None if act == "linear" else clamp)

    resolutions = sorted((int(k.split(".")[0][1:]) for k in sd if k.endswith("conv0.weight")), reverse=True)
    x = conv(img, f"b{resolutions[0]}.fromrgb")
    for res in resolutions:
        y = conv(x, f"b{res}.skip", act="linear", down=2, gain=math.sqrt(0.5))
        x = y + conv(conv(x, f"b{res}.conv0"), f"b{res}.conv1", down=2, gain=math.sqrt(0.5))
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.reshape(g, -1, 1, c, h, w)
    y = ((y - y.mean(0)).square().mean(0) + 1e-8).sqrt().mean([2, 3, 4]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    x = conv(torch.cat([x, y], 1), "b4.conv")
    return nv_fc(nv_fc(x.flatten(1), sd, "b4.fc", act="lrelu"), sd, "b4.out")


@pytest.mark.parametrize("conv_clamp", [None, 0.5])
def test_nvidia_pickle_renders_nvidias_images(tmp_path, nvidia_modules, conv_clamp):
    _, easydict = nvidia_modules
    g, g_ema, d = tiny_models(seed=4, conv_clamp=conv_clamp)
    path = tmp_path / "snapshot.pkl"
    write_nvidia_pickle(path, g, g_ema, d, tmp_path / "m", easydict)
    with open(path, "rb") as f:
        data = safe_load(f)
    loaded = load_generator(path)
    z = loaded.sample(3, seed=1)["z"]
    with torch.no_grad():
        ref = nvidia_generator_forward(data["G_ema"].tensors(), z, clamp=conv_clamp)
        ours = loaded(z, noise_mode="const")
        assert ref.abs().mean() > 0.1
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
        img = torch.randn(4, 3, 32, 32)
        d_ref = nvidia_discriminator_forward(data["D"].tensors(), img, clamp=conv_clamp)
        torch.testing.assert_close(loaded.discriminator(img), d_ref, rtol=0, atol=1e-4)


def test_nvidia_up_conv_orientation_by_hand(tmp_path, nvidia_modules):
    """A single tap at (a, b) of a stored up-conv weight and a unit input at (i, j): NVIDIA's transposed
    conv puts the tap at (r, c) = (2i + a, 2j + b) of the zero-stuffed grid, and the FIR (pads 1, 1;
    taps [1, 3, 3, 1] / 8 * 2 per axis) spreads it over rows r - 2 ... r + 1 (columns alike)."""
    _, g_ema, _ = tiny_models()
    rec = to_persistent(g_ema, "")
    conv0 = rec.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv0"]
    (a, b), (i, j) = (0, 2), (1, 2)
    tap = torch.zeros_like(conv0.state["_parameters"]["weight"])
    tap[0, 0, a, b] = 1
    conv0.state["_parameters"]["weight"] = nn.Parameter(tap, requires_grad=False)
    path = tmp_path / "tap.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": rec}, f)

    x = torch.zeros(1, tap.shape[1], 4, 4)
    x[0, 0, i, j] = 1
    with torch.no_grad():
        out = load_generator(path).synthesis.b8.conv0._conv(x)[0]
    spread = torch.tensor([0.25, 0.75, 0.75, 0.25])
    expected = torch.zeros_like(out)
    r, c = 2 * i + a, 2 * j + b
    expected[0, r - 2 : r + 2, c - 2 : c + 2] = spread.outer(spread)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- rosinality fixture writer
def make_kernel(gain=1.0):
    k = torch.tensor([1.0, 3, 3, 1])
    k = k[None, :] * k[:, None]
    return k / k.sum() * gain


def to_rosinality_generator(g: StyleGAN2Generator) -> dict:
    """A pbw generator in rosinality's model.Generator state-dict layout (the inverse mapping)."""
    sd, out = g.state_dict(), collections.OrderedDict()
    for i in range(g.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"].clone()
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"].clone()
    out["input.input"] = sd["synthesis.b4.const"][None].clone()
    noises = []

    def styled(dst, src, up=False):
        w = sd[f"{src}.weight"]
        out[f"{dst}.conv.weight"] = (w.flip([2, 3]) if up else w)[None].clone()  # true conv in the up-conv
        if up:
            out[f"{dst}.conv.blur.kernel"] = make_kernel(4)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"].clone()
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"].clone()
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1).clone()
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"].clone()
        noises.append(sd[f"{src}.noise_const"][None, None].clone())

    def to_rgb(dst, src, up=True):
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, 3, 1, 1).clone()
        if up:
            out[f"{dst}.upsample.kernel"] = make_kernel(4)
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None].clone()
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"].clone()
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"].clone()

    styled("conv1", "synthesis.b4.conv1")
    to_rgb("to_rgb1", "synthesis.b4.torgb", up=False)
    for k, res in enumerate(g.synthesis.block_resolutions[1:]):
        styled(f"convs.{2 * k}", f"synthesis.b{res}.conv0", up=True)
        styled(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1")
    for k, res in enumerate(g.synthesis.block_resolutions[1:]):
        to_rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
    for i, n in enumerate(noises):
        out[f"noises.noise_{i}"] = n
    return out


def to_rosinality_discriminator(d: StyleGAN2Discriminator) -> dict:
    """A pbw discriminator in rosinality's model.Discriminator layout."""
    sd, out, top = d.state_dict(), collections.OrderedDict(), d.resolution
    out["convs.0.0.weight"], out["convs.0.1.bias"] = sd[f"b{top}.fromrgb.weight"], sd[f"b{top}.fromrgb.bias"]
    for j, res in enumerate(d.block_resolutions, start=1):
        out[f"convs.{j}.conv1.0.weight"] = sd[f"b{res}.conv0.weight"]
        out[f"convs.{j}.conv1.1.bias"] = sd[f"b{res}.conv0.bias"]
        out[f"convs.{j}.conv2.0.kernel"] = make_kernel()
        out[f"convs.{j}.conv2.1.weight"] = sd[f"b{res}.conv1.weight"]
        out[f"convs.{j}.conv2.2.bias"] = sd[f"b{res}.conv1.bias"]
        out[f"convs.{j}.skip.0.kernel"] = make_kernel()
        out[f"convs.{j}.skip.1.weight"] = sd[f"b{res}.skip.weight"]
    out["final_conv.0.weight"], out["final_conv.1.bias"] = sd["b4.conv.weight"], sd["b4.conv.bias"]
    for i, name in enumerate(("fc", "out")):
        out[f"final_linear.{i}.weight"], out[f"final_linear.{i}.bias"] = sd[f"b4.{name}.weight"], sd[f"b4.{name}.bias"]
    return {k: v.clone() for k, v in out.items()}


# A reference forward with rosinality's numerics (model.py, op/ CPU paths), independent of pbw's code.
def r_upfirdn(x, kernel, up, pad0, pad1):
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    out = F.conv2d(x.reshape(b * c, 1, *x.shape[2:]), kernel.flip([0, 1])[None, None])
    return out.reshape(b, c, *out.shape[2:])


def r_lrelu(x, bias):
    return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)), 0.2) * math.sqrt(2)


def r_modconv(x, style, sd, prefix, demodulate=True, upsample=False):
    b, cin, h, w = x.shape
    weight = sd[f"{prefix}.weight"]
    _, cout, _, k, _ = weight.shape
    mod_w = sd[f"{prefix}.modulation.weight"]
    s = F.linear(style, mod_w / math.sqrt(mod_w.shape[1]), sd[f"{prefix}.modulation.bias"])
    weight = weight / math.sqrt(cin * k * k) * s.view(b, 1, cin, 1, 1)
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, cout, 1, 1, 1)
    if upsample:
        wt = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * cin, h, w), wt, stride=2, groups=b)
        out = out.reshape(b, cout, *out.shape[2:])
        p = 4 - 2 - (k - 1)
        return r_upfirdn(out, sd[f"{prefix}.blur.kernel"], 1, (p + 1) // 2 + 1, p // 2 + 1)
    out = F.conv2d(x.reshape(1, b * cin, h, w), weight.reshape(b * cout, cin, k, k), padding=k // 2, groups=b)
    return out.reshape(b, cout, h, w)


def rosinality_generator_forward(sd, z, n_mlp, log_size):
    x = z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        wgt = sd[f"style.{i}.weight"]
        x = r_lrelu(F.linear(x, wgt * (0.01 / math.sqrt(wgt.shape[1]))), sd[f"style.{i}.bias"] * 0.01)
    latent = x.unsqueeze(1).repeat(1, log_size * 2 - 2, 1)

    def styled(out, prefix, style, noise, up=False):
        out = r_modconv(out, style, sd, f"{prefix}.conv", upsample=up)
        out = out + sd[f"{prefix}.noise.weight"] * sd[f"noises.noise_{noise}"]
        return r_lrelu(out, sd[f"{prefix}.activate.bias"])

    def to_rgb(out, prefix, style, skip=None):
        out = r_modconv(out, style, sd, f"{prefix}.conv", demodulate=False) + sd[f"{prefix}.bias"]
        return out if skip is None else out + r_upfirdn(skip, sd[f"{prefix}.upsample.kernel"], 2, 2, 1)

    out = sd["input.input"].repeat(z.shape[0], 1, 1, 1)
    out = styled(out, "conv1", latent[:, 0], 0)
    skip = to_rgb(out, "to_rgb1", latent[:, 1])
    i = 1
    for k in range(log_size - 2):
        out = styled(out, f"convs.{2 * k}", latent[:, i], 2 * k + 1, up=True)
        out = styled(out, f"convs.{2 * k + 1}", latent[:, i + 1], 2 * k + 2)
        skip = to_rgb(out, f"to_rgbs.{k}", latent[:, i + 2], skip)
        i += 2
    return skip


def rosinality_discriminator_forward(sd, img, n_blocks):
    def conv_layer(x, prefix, k, down=False, activate=True):
        if down:
            p = 4 - 2 + k - 1
            x = r_upfirdn(x, sd[f"{prefix}.0.kernel"], 1, (p + 1) // 2, p // 2)
        i = 1 if down else 0
        wgt = sd[f"{prefix}.{i}.weight"]
        x = F.conv2d(x, wgt / math.sqrt(wgt[0].numel()), stride=2 if down else 1, padding=0 if down else k // 2)
        return r_lrelu(x, sd[f"{prefix}.{i + 1}.bias"]) if activate else x

    out = conv_layer(img, "convs.0", 1)
    for j in range(1, n_blocks + 1):
        y = conv_layer(conv_layer(out, f"convs.{j}.conv1", 3), f"convs.{j}.conv2", 3, down=True)
        out = (y + conv_layer(out, f"convs.{j}.skip", 1, down=True, activate=False)) / math.sqrt(2)
    b, c, h, w = out.shape
    group = min(b, 4)
    std = out.view(group, -1, 1, c, h, w)
    std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdims=True).squeeze(2)
    out = conv_layer(torch.cat([out, std.repeat(group, 1, h, w)], 1), "final_conv", 3).view(b, -1)
    w0 = sd["final_linear.0.weight"]
    out = r_lrelu(F.linear(out, w0 / math.sqrt(w0.shape[1])), sd["final_linear.0.bias"])
    w1 = sd["final_linear.1.weight"]
    return F.linear(out, w1 / math.sqrt(w1.shape[1]), sd["final_linear.1.bias"])


def adam_state(params):
    opt = torch.optim.Adam(params, lr=0.002, betas=(0.0, 0.99))
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def write_rosinality_train_checkpoint(path, g, g_ema, d):
    """checkpoint/NNNNNN.pt as rosinality's train.py saves it (no latent_avg)."""
    args = argparse.Namespace(
        path="lmdb",
        iter=800000,
        batch=16,
        size=32,
        r1=10,
        path_regularize=2,
        latent=16,
        n_mlp=2,
        channel_multiplier=2,
        augment=False,
        augment_p=0,
        start_iter=0,
    )
    torch.save(
        {
            "g": to_rosinality_generator(g),
            "d": to_rosinality_discriminator(d),
            "g_ema": to_rosinality_generator(g_ema),
            "g_optim": adam_state([nn.Parameter(torch.zeros(3))]),
            "d_optim": adam_state([nn.Parameter(torch.zeros(2))]),
            "args": args,
            "ada_aug_p": 0.0,
        },
        path,
    )


def test_rosinality_convert_weight_file_matches_reference_forward(tmp_path):
    _, g_ema, _ = tiny_models(seed=5)
    path = tmp_path / "stylegan2-bedroom-config-f.pt"
    ros = to_rosinality_generator(g_ema)
    torch.save({"g_ema": ros, "latent_avg": g_ema.mapping.w_avg.clone()}, path)  # convert_weight.py's layout

    loaded = load_generator(path)
    assert_same_state(loaded, g_ema)  # every tensor placed, up-conv weights flipped back
    (w_ref, img_ref), (w, img) = outputs(g_ema), outputs(loaded)
    assert torch.equal(w, w_ref) and torch.equal(img, img_ref)
    assert loaded.discriminator is None
    # Against rosinality's own numerics (transpose conv on the unflipped weight, blur * 4, ...).
    z = g_ema.sample(3, seed=11)["z"]
    with torch.no_grad():
        ref = rosinality_generator_forward(ros, z, n_mlp=2, log_size=5)
        ours = loaded(z, noise_mode="const")
    assert ours.abs().mean() > 0.1
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    # The flip matters: without it rosinality's up-conv gives a different image.
    ros_noflip = dict(
        ros,
        **{
            k: v.flip([3, 4])
            for k, v in ros.items()
            if k.endswith(".conv.weight") and "convs." in k and int(k.split(".")[1]) % 2 == 0
        },
    )
    with torch.no_grad():
        assert (rosinality_generator_forward(ros_noflip, z, 2, 5) - ours).abs().max() > 1e-2


def test_rosinality_train_checkpoint_with_discriminator(tmp_path):
    g, g_ema, d = tiny_models(seed=7)
    path = tmp_path / "010000.pt"
    write_rosinality_train_checkpoint(path, g, g_ema, d)

    imported = read_checkpoint(path)
    assert any("no latent_avg" in n for n in imported.notes)
    loaded = load_generator(path)
    assert_same_state(loaded.synthesis, g_ema.synthesis)
    assert_same_state(loaded.discriminator, d)
    # No latent_avg: w_avg is the mean w over seeded samples, close to the mapping output mean.
    with torch.no_grad():
        mean_w = g_ema.mapping(torch.randn(4096, 16, generator=torch.Generator().manual_seed(1)))[:, 0].mean(0)
    assert (loaded.mapping.w_avg - mean_w).abs().max() < 0.15 * mean_w.abs().max()
    raw = load_generator(path, ema=False)
    assert_same_state(raw.synthesis, g.synthesis)
    img = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = rosinality_discriminator_forward(to_rosinality_discriminator(d), img, n_blocks=3)
        torch.testing.assert_close(loaded.discriminator(img), ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(loaded.discriminator(img), d(img))


def test_rosinality_errors(tmp_path):
    _, g_ema, _ = tiny_models()
    ros = to_rosinality_generator(g_ema)
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": {k: v for k, v in ros.items() if k != "convs.3.activate.bias"}}, path)
    with pytest.raises(CheckpointError, match=r"rosinality.*no 'convs\.3\.activate\.bias'"):
        load_generator(path)
    torch.save({"g_ema": {**ros, "extra.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"rosinality.*cannot place: \['extra\.weight'\]"):
        load_generator(path)
    torch.save({"g_ema": ros, "latent_avg": torch.zeros(7)}, path)
    with pytest.raises(CheckpointError, match="latent_avg has 7 values, w has 16"):
        load_generator(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint format.*empty file"):
        load_generator(path)
    torch.save({"g_ema": ros}, path)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_generator(cut)
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match=r"no supported layout \(top-level keys \['model'\]\)"):
        load_generator(path)
    torch.save({"g_ema": ros, "extra": nn.Linear(2, 2)}, path)  # a pickled module: not weights-only
    with pytest.raises(CheckpointError, match="other than tensors"):
        load_generator(path)
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_generator(path)
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "missing.pt")


# ---------------------------------------------------------------- pbw checkpoints and the CLI
def test_pbw_lightning_checkpoint(tmp_path):
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self, r1_gamma: float = 0.1, batch_size: int = 4):
            super().__init__()
            self.save_hyperparameters()
            self.g_kwargs = dict(G_KW, truncation_psi=0.7)
            self.generator, self.generator_ema, self.discriminator = tiny_models(seed=9, truncation_psi=0.7)
            self.lpips_like = nn.Linear(2, 2)  # other modules in the state_dict are ignored

        def on_save_checkpoint(self, checkpoint):
            checkpoint["pbw"] = {
                "family": "stylegan2",
                "generator": self.g_kwargs,
                "discriminator": D_KW,
                "format_version": 1,
            }

        def training_step(self, batch, _):
            return self.discriminator(self.generator(batch[0])).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.discriminator.parameters(), lr=0.0)

    module = Tiny()
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 16)), batch_size=4))
    path = tmp_path / "last.ckpt"
    assert path.is_file()

    loaded = load_generator(path)
    assert loaded.truncation_psi == 0.7
    assert_same_state(loaded, module.generator_ema)
    assert_same_state(loaded.discriminator, module.discriminator)
    assert torch.equal(outputs(loaded)[1], outputs(module.generator_ema)[1])
    assert_same_state(load_generator(path, ema=False).synthesis, module.generator.synthesis)


def test_cli_convert_and_info_round_trip(tmp_path, capsys, nvidia_modules):
    _, easydict = nvidia_modules
    g, g_ema, d = tiny_models(seed=2, conv_clamp=256)
    src, out = tmp_path / "snapshot.pkl", tmp_path / "converted.ckpt"
    write_nvidia_pickle(src, g, g_ema, d, tmp_path / "m", easydict)

    assert cli_main(["convert", str(src), str(out)]) == 0
    assert "generator_ema" in capsys.readouterr().out
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["pbw"]["family"] == "stylegan2" and ckpt["pbw"]["format_version"] == 1
    assert ckpt["pbw"]["generator"]["conv_clamp"] == 256 and ckpt["pbw"]["discriminator"]["resolution"] == 32
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"generator_ema", "generator", "discriminator"}
    loaded = load_generator(out)
    assert torch.equal(outputs(loaded)[1], outputs(g_ema)[1])
    assert_same_state(loaded.discriminator, d)

    assert cli_main(["info", str(src)]) == 0
    text = capsys.readouterr().out
    assert "NVIDIA StyleGAN2-ADA" in text and "resolution:    32" in text and "channel_base=256" in text
    assert "not imported: augment_pipe, training_set_kwargs" in text
    assert cli_main(["info", str(out)]) == 0
    assert "pbw checkpoint" in capsys.readouterr().out
    (tmp_path / "junk.bin").write_bytes(b"\x00junk")
    assert cli_main(["info", str(tmp_path / "junk.bin")]) == 2
    assert "unknown checkpoint format" in capsys.readouterr().err


def test_pbw_checkpoint_errors(tmp_path):
    _, g_ema, _ = tiny_models()
    path = tmp_path / "x.ckpt"
    state = {f"generator_ema.{k}": v for k, v in g_ema.state_dict().items()}
    torch.save({"pbw": {"family": "stylegan2", "generator": G_KW, "format_version": 2}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match="format_version 2; this pbw reads 1"):
        load_generator(path)
    torch.save({"pbw": {"family": "stylegan2", "generator": G_KW, "format_version": 1}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="no generator_ema. or generator. weights"):
        load_generator(path)
    torch.save(
        {
            "pbw": {"family": "stylegan2", "generator": dict(G_KW, resolution=64), "format_version": 1},
            "state_dict": state,
        },
        path,
    )
    with pytest.raises(
        CheckpointError,
        match=r"pbw checkpoint: the generator_ema weights do not fit.*missing: "
        r"synthesis\.b64",
    ):
        load_generator(path)
    torch.save({"pbw": {"family": "stylegan2", "generator": G_KW, "format_version": 1}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match="no raw"):
        load_generator(path, ema=False)
    assert torch.equal(outputs(load_generator(path))[1], outputs(g_ema)[1])


def test_checkpoint_of_the_pbw_stylegan2_trainer(tmp_path):
    from pbw.training.stylegan2 import StyleGAN2Module

    module = StyleGAN2Module(
        resolution=32,
        z_dim=16,
        w_dim=16,
        mapping_layers=2,
        channel_base=256,
        channel_max=32,
        num_metric_samples=0,
        grid_size=2,
    )
    randomized(module.generator_ema, 1)
    randomized(module.discriminator, 2)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)  # the trainer's own "pbw" entry
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    loaded = load_generator(path)
    assert_same_state(loaded, module.generator_ema)
    assert_same_state(loaded.discriminator, module.discriminator)
    assert torch.equal(outputs(loaded)[1], outputs(module.generator_ema)[1])
