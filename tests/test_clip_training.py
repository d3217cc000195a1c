"""CLIPTrainer: open_clip contrastive training on captioned batches, learning on synthetic birds, export."""

import json
import random

import clip_probes
import numpy as np
import open_clip
import pytest
import pytorch_lightning as pl
import torch

from pbw.cli import train_main
from pbw.data import synthetic as syn
from pbw.training.clip import CLIPTrainer, in_batch_accuracy, register_model_configs

# A micro configuration so that a real training run fits in a few seconds of CPU.
MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def micro_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    (folder / "test-micro-clip.json").write_text(json.dumps(MICRO))
    open_clip.add_model_config(folder)
    return "test-micro-clip"


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    root = syn.generate(tmp_path_factory.mktemp("birds"), n=480, resolution=32, seed=0, progress=False)
    images, colors, files = syn.load_split(root, "all")
    captions = [(root / "text_c10" / f).with_suffix(".txt").read_text().splitlines() for f in files]
    return images, captions, colors


class Captioned(torch.utils.data.Dataset):
    """Batches in the DataModule format: {"image": [-1,1], "label", "caption": one random caption}."""

    def __init__(self, images, captions):
        self.images, self.captions = images, captions

    def __len__(self):
        return len(self.images)

    def __getitem__(self, k):
        return {"image": self.images[k], "label": k, "caption": random.choice(self.captions[k])}


def test_mini_config_is_registered_and_captions_fit():
    assert "pbw-mini-clip" in register_model_configs()
    assert "pbw-mini-clip" in open_clip.list_models()
    model = CLIPTrainer("pbw-mini-clip")
    assert model.image_size == 64
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 6e6
    rng = np.random.default_rng(0)
    spec = syn.sample_bird(rng, 3)
    longest = max(syn.make_captions(spec, rng, n=200), key=len)
    tokens = model.tokenizer([longest])
    assert (tokens[0] != 0).sum() < tokens.shape[1]  # room left: nothing truncated
    with torch.no_grad():
        feats = model.encode_images(torch.zeros(2, 3, 48, 48))  # any size is resized to 64
    assert feats.shape == (2, 128) and torch.allclose(feats.norm(dim=1), torch.ones(2))


def test_preprocess_maps_minus_one_one_to_clip_normalization(micro_clip):
    model = CLIPTrainer(micro_clip)
    x = torch.full((1, 3, 32, 32), -1.0)
    expected = (0 - model.mean) / model.std
    assert torch.allclose(model.preprocess(x), expected.expand(1, 3, 32, 32))
    x = torch.rand(4, 3, 40, 40) * 2 - 1
    assert model.preprocess(x).shape == (4, 3, 32, 32)
    assert model.preprocess(x, augment=True).shape == (4, 3, 32, 32)
    # full-size "crops" leave each image as it is or mirror it; smaller crops zoom in
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    plain = model.preprocess(x)
    model.hparams.crop_scale = (1.0, 1.0)
    aug = model.preprocess(x, augment=True)
    same = (aug - plain).abs().amax(dim=(1, 2, 3)) < 1e-4
    mirrored = (aug - plain.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-4
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    model.hparams.crop_scale = (0.5, 0.5)  # half the side: a ramp across the image spans half its range
    ramp = torch.linspace(-1, 1, 32).expand(8, 3, 32, 32)
    spans = model.preprocess(ramp, augment=True)[:, 0, 16]
    full_span = (plain := model.preprocess(ramp))[0, 0, 16].max() - plain[0, 0, 16].min()
    assert torch.allclose(spans.amax(1) - spans.amin(1), full_span / 2, rtol=0.1)


def test_in_batch_accuracy():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 1.0]])
    assert in_batch_accuracy(logits).item() == pytest.approx(2 / 3)


@pytest.fixture
def one_thread():
    """Micro models train several times faster on one intra-op thread (no sync per tiny op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_micro_clip_learns_part_colors_on_synthetic_birds(micro_clip, birds, tmp_path, one_thread):
    images, captions, colors = birds
    train, test = slice(0, 400), slice(400, 480)
    torch.manual_seed(0)
    random.seed(0)
    model = CLIPTrainer(micro_clip, lr=2e-3, warmup_steps=10, export_dir=str(tmp_path / "export"))
    loader = torch.utils.data.DataLoader(
        Captioned(images[train], captions[train]), batch_size=40, shuffle=True, drop_last=True
    )
    val = torch.utils.data.DataLoader(Captioned(images[test], captions[test]), batch_size=40)
    trainer = pl.Trainer(
        max_epochs=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=20,
    )
    before = trainer.validate(model, val, verbose=False)[0]["val/loss"]
    trainer.fit(model, loader, val)
    after = trainer.callback_metrics["val/loss"].item()
    assert after < before - 0.5
    assert model.model.logit_scale.item() <= np.log(100) + 1e-6

    # zero-shot probe: which of the 11 palette colors does "this bird has a <color> <part>." pick?
    model.eval()
    accuracy = clip_probes.part_color_probe(
        model.similarity, images[test], colors[test], ("body", "head", "wing", "tail")
    )
    assert np.mean(list(accuracy.values())) > 3 / len(syn.PALETTE), accuracy  # chance is 1/11 (beak: a few pixels)
    probes = [syn.canonical_caption({"head": c}, ("head",)) for c in syn.PALETTE]

    # the exported local-dir: folder loads with plain open_clip and gives the same embeddings
    export = tmp_path / "export"
    assert (export / "open_clip_model.safetensors").is_file()
    reloaded = open_clip.create_model(f"local-dir:{export}")
    tokens = model.tokenizer(probes)
    with torch.no_grad():
        assert torch.allclose(reloaded.encode_text(tokens), model.model.encode_text(tokens), atol=1e-5)
    assert open_clip.get_tokenizer(f"local-dir:{export}")(probes).equal(tokens)
    resumed = CLIPTrainer(f"local-dir:{export}")
    assert torch.allclose(
        resumed.similarity(images[test][:4], probes), model.similarity(images[test][:4], probes), atol=1e-5
    )


def test_fp16_export_is_half_the_size(micro_clip, tmp_path):
    model = CLIPTrainer(micro_clip)
    full = model.save_open_clip(tmp_path / "fp32") / "open_clip_model.safetensors"
    model.hparams.export_precision = "fp16"
    half = model.save_open_clip(tmp_path / "fp16") / "open_clip_model.safetensors"
    assert half.stat().st_size < 0.55 * full.stat().st_size
    assert isinstance(open_clip.create_model(f"local-dir:{tmp_path / 'fp16'}"), torch.nn.Module)


def test_clear_errors(micro_clip, tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model"):
        CLIPTrainer("no-such-clip")
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        CLIPTrainer(f"local-dir:{tmp_path}")
    model = CLIPTrainer(micro_clip)
    with pytest.raises(KeyError, match="caption"):
        model.training_step({"image": torch.zeros(2, 3, 32, 32), "label": torch.zeros(2)}, 0)


def test_mini_config_trains_and_resumes_through_the_cli(tmp_path):
    args = [
        "fit",
        "--config",
        "pbw/configs/mini/clip.yaml",
        "--data.init_args.val_size",
        "8",
        "--data.init_args.batch_size",
        "8",
        "--data.init_args.num_workers",
        "0",
        "--model.init_args.export_dir",
        str(tmp_path / "clip"),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
    ]
    cli = train_main([*args, "--trainer.max_steps", "2"])
    assert isinstance(cli.model, CLIPTrainer) and cli.model.hparams.model_name == "pbw-mini-clip"
    assert cli.trainer.global_step == 2 and np.isfinite(cli.trainer.callback_metrics["train/loss"].item())
    resumed = train_main([*args, "--trainer.max_steps", "3", "--ckpt_path", "last"])  # lab/retrain_mini.sh
    assert resumed.trainer.ckpt_path == str(tmp_path / "checkpoints/last.ckpt") and resumed.trainer.global_step == 3
    saved = json.loads((tmp_path / "clip" / "open_clip_config.json").read_text())
    assert saved["model_cfg"]["vision_cfg"]["image_size"] == 64
    assert isinstance(open_clip.create_model(f"local-dir:{tmp_path / 'clip'}"), torch.nn.Module)


def test_trainer_and_editor_show_images_to_clip_the_same_way():
    """The CLIP trainer's input for an image equals the editor's whole-image view of it, so a CLIP
    trained by pbw sees edited images as it saw its training images."""
    from pbw.semantic import SemanticNet

    torch.manual_seed(0)
    trainer, editor = CLIPTrainer("pbw-tiny-clip"), SemanticNet("pbw-tiny-clip", None, crops=0)
    x = torch.rand(2, 3, 24, 24) * 2 - 1  # smaller than CLIP's input: both resample
    assert torch.allclose(trainer.preprocess(x), editor.views(x, None, crops=0), atol=1e-6)
