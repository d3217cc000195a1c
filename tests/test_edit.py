"""Editing: masks, losses, the batched CMA-ES and the EditModule on tiny generators and CLIP."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from pbw.editing import (
    Cancel,
    EditModule,
    Editor,
    EditRequest,
    EditResult,
    EditSettings,
    MaskError,
    PreservationLoss,
    SepCMAES,
    StopEdit,
    TimeLimit,
    build_lpips,
    load_mask,
)
from pbw.editing.result import render_layers
from pbw.models.maskable import MaskableGenerator, resize_mask
from pbw.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from pbw.semantic import PromptSet, SemanticNet

RES = 32
TINY_SG2 = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)


class TinyConditional(MaskableGenerator):
    """A class-conditional generator with a spatial latent (BigGAN's shape of interface):
    w = 4x4 feature map from (z, class); decode blends w and w0 at 4x4 and is conditioned on `cond`."""

    def __init__(self, n_classes=5, dim_z=8):
        super().__init__()
        self.dim_z, self.n_classes = dim_z, n_classes
        self.embed = nn.Embedding(n_classes, dim_z)
        self.fc = nn.Linear(dim_z, 8 * 4 * 4)
        self.net = nn.Sequential(
            nn.Upsample(scale_factor=RES // 4), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        )
        self.bias = nn.Linear(dim_z, 3)

    @property
    def resolution(self):
        return RES

    def sample(self, n, seed=None, classes=None, **kw):
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        y = torch.randint(0, self.n_classes, (n,), generator=g) if classes is None else torch.full((n,), classes)
        return {"z": torch.randn(n, self.dim_z, generator=g), "class": y}

    def encode(self, codes):
        return self.fc(codes["z"] + self.embed(codes["class"])).view(-1, 8, 4, 4)

    def decode(self, w, w0=None, mask=None, cond=None):
        if mask is not None:
            m = resize_mask(mask, 4)
            w = w * m + w0 * (1 - m)
        return torch.tanh(self.net(w) + self.bias(cond["z"])[:, :, None, None])


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return SemanticNet("pbw-tiny-clip", None, crops=2)


@pytest.fixture(scope="module")
def sg2():
    torch.manual_seed(1)
    return StyleGAN2Generator(RES, **TINY_SG2)


def _mask():
    return load_mask("0.25,0.25,0.75,0.75", RES)[0]


FAST = dict(steps=4, population=6, generations=2, lr=0.05, crops=2)


def _requests(g, masks, prompt="a red bird", classes=None):
    kw = {"classes": classes} if classes is not None else {}
    return [EditRequest(PromptSet.parse(prompt), g.sample(1, seed=i, **kw), m) for i, m in enumerate(masks)]


def _fit(module):
    """Optimize an EditModule as the Editor does (CMA-ES in on_fit_start, then Adam)."""
    import pytorch_lightning as pl

    pl.Trainer(
        max_steps=max(module.settings.steps, 1),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    ).fit(module)
    return module


def _edit(g, clip, masks, prompt="a red bird", classes=None, **settings):
    return _fit(EditModule(g, clip, _requests(g, masks, prompt, classes), EditSettings(**{**FAST, **settings})))


def _run(g, clip, requests, callbacks=(), **settings):
    return Editor(g, clip, device="cpu").run(requests, EditSettings(**{**FAST, **settings}), callbacks, progress=False)


# ---- masks ----------------------------------------------------------------------------------
def test_mask_formats(tmp_path):
    arr = np.zeros((RES, RES), np.uint8)
    arr[8:16, 4:20] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    Image.fromarray(arr).convert("RGB").save(tmp_path / "m.jpg", quality=100)
    np.save(tmp_path / "m.npy", arr.astype(bool))
    rect_px = load_mask("4,8,20,16", RES)[0]
    rect_fr = load_mask("0.125,0.25,0.625,0.5", RES)[0]
    assert rect_px.shape == (1, 1, RES, RES) and torch.equal(rect_px, rect_fr)
    for name in ("m.png", "m.npy"):
        assert torch.equal(load_mask(str(tmp_path / name), RES)[0], rect_px)
    assert (load_mask(str(tmp_path / "m.jpg"), RES)[0] - rect_px).abs().max() < 0.1


def test_mask_resized_with_note_and_feathered(tmp_path):
    np.save(tmp_path / "big.npy", np.ones((64, 48), np.float32))
    m, notes = load_mask(str(tmp_path / "big.npy"), RES)
    assert m.shape == (1, 1, RES, RES) and "resized" in notes[0] and "64x48" in notes[0]
    soft, notes = load_mask("8,8,24,24", RES, feather=3)
    assert 0 < soft[0, 0, 8, 16] < 1 and soft[0, 0, 16, 16] > 0.99 and soft[0, 0, 0, 0] < 0.01
    assert "feathered" in notes[0]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("0,0,0,0", "empty"),
        ("10,10,5,20", "empty"),
        ("0,0,40,10", "outside"),
        ("no_such_file.png", "neither an existing file"),
    ],
)
def test_bad_masks(spec, match):
    with pytest.raises(MaskError, match=match):
        load_mask(spec, RES)


def test_empty_and_out_of_range_arrays(tmp_path):
    with pytest.raises(MaskError, match="empty"):
        load_mask(np.zeros((RES, RES)), RES)
    with pytest.raises(MaskError, match=r"\[0, 1\]"):
        load_mask(np.full((RES, RES), 2.0), RES)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(MaskError, match="cannot read"):
        load_mask(str(tmp_path / "bad.png"), RES)


# ---- losses ---------------------------------------------------------------------------------
def test_lpips_local_backbone_weights_and_off_switch(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.squeezenet1_1(weights=None)
    torch.save(tv.state_dict(), tmp_path / "squeeze.pth")
    lp = build_lpips("squeeze", str(tmp_path / "squeeze.pth"))
    assert torch.equal(next(lp.net.parameters()), tv.features[0].weight)
    with pytest.raises(RuntimeError, match="not a torchvision squeezenet1_1 state dict"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "junk.pth")
        build_lpips("squeeze", str(tmp_path / "junk.pth"))
    pres = PreservationLoss(True, "squeeze", str(tmp_path / "squeeze.pth"))
    x0 = torch.rand(2, 3, RES, RES) * 2 - 1
    x = x0.clone()
    m = _mask().expand(2, -1, -1, -1)
    x[:, :, 10:20, 10:20] = 0.9  # inside the mask only
    l1, lpips = pres(x, x0, m)
    assert torch.allclose(l1, torch.zeros(2)) and torch.allclose(lpips, torch.zeros(2), atol=1e-6)
    x[:, :, :2] = 0.5  # outside
    l1, lpips = pres(x, x0, m)
    assert (l1 > 0).all() and (lpips > 0).all()
    l1_off, lp_off = PreservationLoss(lpips=False)(x, x0, m)
    assert torch.equal(l1_off, l1) and torch.equal(lp_off, torch.zeros(2))


def test_torchmetrics_private_lpips_network_is_where_pbw_expects_it():
    """pbw builds LPIPS from torchmetrics' private `_NoTrainLpips`: the public metric downloads its
    ImageNet backbone when built, with no way to pass a local file. If torchmetrics moves or changes
    that class, this test names the problem before any edit fails."""
    import inspect

    from torchmetrics.functional.image import lpips as tm_lpips
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    assert {"net", "pnet_rand"} <= set(inspect.signature(tm_lpips._NoTrainLpips).parameters)
    assert "_NoTrainLpips" in inspect.getsource(LearnedPerceptualImagePatchSimilarity.__init__)


# ---- CMA-ES ---------------------------------------------------------------------------------
def test_sep_cmaes_minimizes_a_batch_of_problems_on_their_active_dims():
    g = torch.Generator().manual_seed(0)
    m0 = torch.randn(2, 30, generator=g) * 2
    active = torch.ones(2, 30, dtype=torch.bool)
    active[1, 15:] = False
    es = SepCMAES(m0, 0.5, 20, active, g)
    for _ in range(120):
        pop = es.ask()
        assert pop.shape == (2, 20, 30)
        es.tell((pop**2).sum(-1))
    assert es.best_f[0] < 1e-2 * (m0[0] ** 2).sum()
    assert torch.equal(es.best_x[1, 15:], m0[1, 15:])  # inactive dims never move
    assert es.best_f[1] - (m0[1, 15:] ** 2).sum() < 1e-2 * (m0[1, :15] ** 2).sum()


# ---- EditModule -----------------------------------------------------------------------------
def test_semantic_loss_falls(sg2, clip):
    torch.manual_seed(0)
    mod = EditModule(sg2, clip, _requests(sg2, [_mask()]), EditSettings(optimizer="adam", steps=10, lr=0.1, crops=2))
    before = mod.objective(mod.render(), crops=0)["semantic"].item()
    _fit(mod)
    after = mod.objective(mod.render(), crops=0)["semantic"].item()
    assert after < before - 0.5, (before, after)


def test_all_zero_mask_changes_nothing(sg2, clip):
    zero = torch.zeros(1, 1, RES, RES)
    mod = _edit(sg2, clip, [zero, _mask()])
    with torch.no_grad():
        x = mod.render()
    assert torch.equal(x[0], mod.x0[0])
    assert not torch.equal(x[1], mod.x0[1])
    assert not torch.equal(mod.latents["w"][0], mod.w0[0, 0])  # the latent moved, the image did not


@pytest.mark.parametrize("optimizer", ["cma+adam", "adam"])
def test_both_optimizers_run_and_log(sg2, clip, optimizer):
    sg2.discriminator = StyleGAN2Discriminator(RES, channel_base=256, channel_max=16)
    try:
        mod = _edit(sg2, clip, [_mask()], optimizer=optimizer)
        m = mod.final_metrics()[0]
    finally:
        sg2.discriminator = None
    assert len(mod.history[0]) == 4 and all("realism" in h for h in mod.history[0])
    for k in ("loss", "semantic", "semantic_score", "realism", "preservation_l1", "preservation_lpips"):
        assert np.isfinite(m[k]), k
    assert -1 <= m["semantic_score"] <= 1 and m["preservation_l1"] > 0


def test_cma_improves_on_the_start_and_batched_equals_loop(sg2, clip):
    reqs = _requests(sg2, [_mask(), _mask()])
    s = dict(optimizer="cma+adam", steps=0, population=6, generations=3, crops=2)
    batched = EditModule(sg2, clip, reqs, EditSettings(**s))
    start = torch.cat([v.flatten(1) for v in batched.latents.values()], 1).clone()
    best = batched.run_cma(progress=False)
    loop = EditModule(sg2, clip, reqs, EditSettings(population_chunk=1, **s))
    best_loop = loop.run_cma(progress=False)
    assert torch.allclose(best, best_loop, rtol=1e-3, atol=1e-3)
    assert not torch.equal(start, batched.latents["w"].flatten(1))


def test_image_mask_ablation_changes_outside(sg2, clip):
    lat = _edit(sg2, clip, [_mask()], optimizer="adam", lr=0.2)
    img = _edit(sg2, clip, [_mask()], optimizer="adam", lr=0.2, mask_mode="image")
    outside = (1 - _mask()).bool().expand(1, 3, -1, -1)
    with torch.no_grad():
        d_lat = (lat.render() - lat.x0)[outside].abs().mean()
        d_img = (img.render() - img.x0)[outside].abs().mean()
    assert d_img > d_lat


# ---- latent spaces (the paper: one broadcast w for masked edits, z for whole images) ------------
def test_stylegan2_spaces_and_paper_defaults(sg2, clip):
    masked = _edit(sg2, clip, [_mask()])
    assert masked.space == "w" and masked.latents["w"].shape == (1, 16)  # one w_dim vector, not W+
    w, _ = masked.decode_latents()
    assert w.shape == (1, sg2.num_ws, 16) and torch.equal(w[:, 0], w[:, -1])  # broadcast to every layer
    wplus = _edit(sg2, clip, [_mask()], space="wplus")
    assert wplus.latents["w"].shape == (1, sg2.num_ws, 16)
    assert not torch.equal(wplus.latents["w"][:, 0], wplus.latents["w"][:, -1])  # layers move apart
    whole = _edit(sg2, clip, [None, None])
    assert whole.space == "z" and list(whole.latents) == ["z"] and not torch.equal(whole.latents["z"], whole.codes["z"])
    with torch.no_grad():  # z space renders through the mapping network: G(z) exactly
        assert torch.allclose(whole.render(), sg2.synthesis(sg2.mapping(whole.latents["z"]), noise_mode="const"))
    assert "preservation_l1" not in whole.final_metrics()[0]


def test_a_space_the_generator_lacks_is_a_clear_error(clip):
    biggan = pytest.importorskip("pbw.models.biggan")
    g = biggan.BigGANGenerator(resolution=32, ch=4, n_classes=3, dim_z=8, shared_dim=4, attention=None)
    with pytest.raises(ValueError, match=r"'wplus' does not fit a BigGANGenerator; its spaces are w, z"):
        _edit(g, clip, [_mask()], classes=0, space="wplus")


def test_frozen_demodulation_follows_the_official_code():
    """With demodulation "frozen" (the paper's code), a masked layer's output is conv(x * s) / ||W s0||:
    modulation blended, demodulation from the frozen style s0 = s(w0) everywhere. Computed here by
    hand for one layer with an all-one mask; "blend" then equals the plain decode of w instead."""
    from pbw.models.stylegan2 import ModulatedConv

    torch.manual_seed(0)
    conv = ModulatedConv(4, 5, w_dim=6, resolution=8, use_noise=False, activation="linear")
    x, w, w0 = torch.randn(1, 4, 8, 8), torch.randn(1, 6), torch.randn(1, 6)
    ones = torch.ones(1, 1, 8, 8)
    s, s0 = conv.affine(w), conv.affine(w0)
    y = F.conv2d(x * s[:, :, None, None], conv.weight, padding=1)
    demod0 = (s0[:, None, :] ** 2 * (conv.weight**2).sum([2, 3])[None]).sum(-1).add(1e-8).rsqrt()
    expected = y * demod0[:, :, None, None] + conv.bias[None, :, None, None]
    assert torch.allclose(conv(x, w, w0, ones, demodulation="frozen"), expected, atol=1e-5)
    assert torch.allclose(conv(x, w, w0, ones, demodulation="blend"), conv(x, w), atol=1e-6)
    sg = StyleGAN2Generator(RES, masked_demodulation="frozen", **TINY_SG2)
    zero = torch.zeros(1, 1, RES, RES)
    w0 = sg.encode(sg.sample(1, seed=0))
    assert torch.allclose(sg.decode(sg.encode(sg.sample(1, seed=1)), w0, zero), sg.decode(w0), atol=1e-6)


def test_conditional_spatial_generator_edits_inside_the_mask_only(clip):
    torch.manual_seed(0)
    g = TinyConditional()
    mask = torch.zeros(1, 1, RES, RES)
    mask[..., :16, :16] = 1  # top-left 2x2 of the 4x4 latent
    mod = EditModule(
        g,
        clip,
        [EditRequest(PromptSet.parse("a lake"), g.sample(1, 0, classes=2), mask)],
        EditSettings(steps=3, population=6, generations=2, lr=0.1, crops=2),
    )
    assert mod._active().view(8, 4, 4)[:, :2, :2].all() and mod._active().sum() == 8 * 4
    _fit(mod)
    dw = (mod.latents["w"] - mod.w0).abs()
    assert dw[..., :2, :2].sum() > 0 and dw[..., 2:, :].sum() == 0 and dw[..., :, 2:].sum() == 0


def test_conditional_whole_image_keeps_a_class_without_continuous_form(clip):
    g = TinyConditional()
    mod = _edit(g, clip, [None], classes=3, lr=0.1)
    assert list(mod.latents) == ["z"] and mod.codes["class"].item() == 3
    assert not torch.equal(mod.latents["z"], mod.codes["z"])


def test_biggan_edits_and_generates(clip):
    biggan = pytest.importorskip("pbw.models.biggan")
    torch.manual_seed(0)
    g = biggan.BigGANGenerator(resolution=32, ch=4, n_classes=3, dim_z=8, shared_dim=4, attention=None).eval()
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    mod = _edit(g, clip, [mask], classes=1)
    with torch.no_grad():
        assert not torch.equal(mod.render(), mod.x0)
    whole = _edit(g, clip, [None], classes=1, lr=0.1)  # text to image: z and the class vector move
    assert sorted(whole.latents) == ["class", "z"] and whole.latents["class"].shape == (1, 3)
    assert not torch.equal(whole.latents["z"], whole.codes["z"])
    assert not torch.equal(whole.latents["class"], F.one_hot(whole.codes["class"], 3).float())
    with torch.no_grad():
        assert torch.allclose(whole.render(), g(whole.latents["z"], whole.latents["class"]), atol=1e-6)


def test_realism_for_both_families(sg2):
    """Each family scores with its own discriminator: StyleGAN2's takes images only, BigGAN's projection
    discriminator the class too (a class vector's top class)."""
    biggan = pytest.importorskip("pbw.models.biggan")
    torch.manual_seed(0)
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    assert sg2.realism(x, sg2.sample(2, seed=0)) is None  # no discriminator
    d = StyleGAN2Discriminator(RES, channel_base=256, channel_max=16)
    sg2.discriminator = d
    try:
        assert torch.equal(sg2.realism(x, sg2.sample(2, seed=0)), d(x).flatten())
    finally:
        sg2.discriminator = None
    g = biggan.BigGANGenerator(resolution=32, ch=4, n_classes=3, dim_z=8, shared_dim=4, attention=None)
    g.discriminator = biggan.BigGANDiscriminator(resolution=32, ch=4, n_classes=3, attention=None).eval()
    y = torch.tensor([0, 2])
    vec = F.one_hot(y, 3).float() * 0.6 + 0.2
    assert torch.equal(g.realism(x, {"class": y}), g.discriminator(x, y).flatten())
    assert torch.equal(g.realism(x, {"class": vec}), g.discriminator(x, y).flatten())
    assert not torch.equal(g.realism(x, {"class": y}), g.realism(x, {"class": y.flip(0)}))


def test_bad_settings():
    with pytest.raises(ValueError, match="optimizer"):
        EditSettings(optimizer="sgd")
    with pytest.raises(ValueError, match="mask_mode"):
        EditSettings(mask_mode="both")
    with pytest.raises(ValueError, match="population=1"):
        EditSettings(population=1)


# ---- the Editor ------------------------------------------------------------------------------
def test_editor_results_and_successive_edits_replay(sg2, clip, tmp_path):
    first = _run(sg2, clip, _requests(sg2, [_mask()]))[0]
    assert first.space == "w" and len(first.layers) == 1 and torch.equal(first.original, sg2.decode(first.w0))
    second_mask = load_mask("0,0,0.4,0.4", RES)[0]
    second = _run(sg2, clip, [EditRequest(PromptSet.parse("a blue bird"), mask=second_mask, base=first)])[0]
    assert torch.equal(second.original, first.edited) and len(second.layers) == 2
    outside = (1 - second_mask).bool().expand(1, 3, -1, -1)
    assert torch.equal(second.edited[outside], first.edited[outside])  # the first edit is kept outside the stroke
    files = second.save(tmp_path / "r")
    assert {p.name for p in files.values()} == {
        "original.png",
        "edited.png",
        "mask.png",
        "comparison.png",
        "metrics.json",
        "latents.pt",
    }
    loaded = EditResult.load(tmp_path / "r", sg2)
    assert torch.equal(loaded.edited, second.edited) and loaded.prompt == second.prompt
    with torch.no_grad():  # the layers alone re-render the image
        assert torch.allclose(render_layers(sg2, loaded.codes, loaded.w0, loaded.layers), second.edited, atol=1e-5)


def test_old_latents_files_still_load(sg2, tmp_path):
    """latents.pt as edit.py and the app wrote them before format versions (W+ latents, no images)."""
    codes = sg2.sample(1, seed=4)
    w0 = sg2.encode(codes)
    w = w0 + 0.3 * torch.randn_like(w0)
    torch.save({"codes": codes, "w0": w0, "latents": {"w": w}, "mask": _mask()}, tmp_path / "edit.pt")
    r = EditResult.load(tmp_path / "edit.pt", sg2)
    with torch.no_grad():
        assert torch.allclose(r.edited, sg2.decode(w, w0, _mask()), atol=1e-6) and r.layers[0].space == "wplus"
    torch.save(
        {"codes": codes, "w0": w0, "latents": {"w": w}, "mask": torch.ones(1, 1, RES, RES)}, tmp_path / "whole.pt"
    )
    with torch.no_grad():
        assert torch.allclose(EditResult.load(tmp_path / "whole.pt", sg2).edited, sg2.decode(w), atol=1e-6)
    with pytest.raises(ValueError, match="load it with the generator"):
        EditResult.load(tmp_path / "edit.pt")
    other = StyleGAN2Generator(RES, **{**TINY_SG2, "w_dim": 8, "z_dim": 8})
    with pytest.raises(ValueError, match=r"not an image of this generator: it has codes \{'z': \(1, 16\)\}"):
        EditResult.load(tmp_path / "edit.pt", other)


class _StopAfter(StopEdit):
    def __init__(self, checks):
        self.left = checks

    def reason(self):
        self.left -= 1
        return "stopped early: test" if self.left < 0 else None


@pytest.mark.parametrize("checks, adam_steps", [(0, 0), (2, 1)])  # in CMA-ES (2 generations), in Adam
def test_a_callback_stops_both_phases(sg2, clip, checks, adam_steps):
    r = _run(sg2, clip, _requests(sg2, [_mask()]), [_StopAfter(checks)], steps=5, generations=2)[0]
    assert len(r.history) == adam_steps and r.notes[-1] == "stopped early: test"


def test_time_limit_and_cancel(sg2, clip):
    r = _run(sg2, clip, _requests(sg2, [_mask()]), [TimeLimit(0)], steps=5)[0]
    assert r.history == [] and "time limit of 0 s" in r.notes[-1]
    cancel = Cancel()
    cancel.cancel()
    r = _run(sg2, clip, _requests(sg2, [_mask()]), [cancel], steps=5)[0]
    assert r.history == [] and r.notes[-1] == "stopped early: cancelled"


def test_images_and_metrics_go_to_a_logger_with_log_image(sg2, clip, tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    class ImageLogger(CSVLogger):  # the log_image signature of WandbLogger
        images = {}

        def log_image(self, key, images, caption=None, **kw):
            self.images[key] = (images, caption)

    logger = ImageLogger(tmp_path)
    reqs = [EditRequest(PromptSet.parse("a red bird"), sg2.sample(1, seed=0), _mask(), name="r0")]
    Editor(sg2, clip, device="cpu").run(
        reqs, EditSettings(steps=2, population=4, generations=2, crops=2), progress=False, logger=logger
    )
    assert set(logger.images) == {"original", "mask_overlay", "edited"}
    imgs, caps = logger.images["edited"]
    assert imgs[0].shape == (3, RES, RES) and imgs[0].min() >= 0 and imgs[0].max() <= 1 and caps == ["r0: a red bird"]
    logger.save()
    text = (Path(logger.log_dir) / "metrics.csv").read_text()
    for k in ("cma/best_loss", "semantic_score", "preservation_l1", "preservation_lpips", "loss"):
        assert k in text, k
