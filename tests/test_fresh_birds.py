"""Fresh synthetic birds: drawn in memory exactly as the dataset writer draws them, and an endless
training stream that never repeats a bird, not across epochs and not across a resume."""

import numpy as np
import pytest
import torch
from PIL import Image

from pbw.data import synthetic as syn
from pbw.data.fresh_birds import EndlessSampler, FreshBirds, FreshBirdsDataModule


def test_draw_birds_are_the_written_dataset_birds(tmp_path):
    root = syn.generate(tmp_path, n=3, resolution=32, seed=5, progress=False)
    birds = syn.draw_birds(3, 32, seed=5)
    meta = syn.load_metadata(root)
    for k, entry in enumerate(meta["images"].values()):
        image = np.asarray(Image.open(root / "CUB_200_2011" / "images" / entry["file"]))
        assert (image == birds.images[k]).all()
        assert (syn.load_part_map(root, entry["file"]) == birds.part_maps[k]).all()
        assert [syn.COLOR_NAMES[c] for c in birds.part_colors[k]] == [entry["part_colors"][p] for p in syn.PARTS]
    assert list(birds.species) == [0, 1, 2]
    x = birds.tensors()
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    later = syn.draw_birds(2, 32, seed=5, start=1)  # bird k depends on (seed, k) only
    assert (later.images == birds.images[1:]).all()


def test_sampler_counts_on_across_epochs():
    s = EndlessSampler(4)
    assert len(s) == 4 and list(s) == [0, 1, 2, 3] and list(s) == [4, 5, 6, 7]


def test_datamodule_batches_resume_and_validation():
    dm = FreshBirdsDataModule(resolution=16, batch_size=4, epoch_size=8, val_size=4, captions=True)
    assert dm.num_classes == 12 and dm.class_names[0] == "Red_Cardinal"
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert b["image"].shape == (4, 3, 16, 16) and b["image"].dtype == torch.float32
    assert b["label"].tolist() == [0, 1, 2, 3] and len(b["caption"]) == 4
    first = torch.cat([b["image"] for b in batches])
    state = dm.state_dict()
    assert state == {"next_index": 8}
    second = torch.cat([b["image"] for b in loader])  # the next epoch: new birds
    assert not any(torch.equal(a, c) for a in first for c in second)
    resumed = FreshBirdsDataModule(resolution=16, batch_size=4, epoch_size=8, val_size=4, captions=True)
    resumed.load_state_dict(state)  # what Lightning does on --ckpt_path last
    assert torch.equal(torch.cat([b["image"] for b in resumed.train_dataloader()]), second)
    v1, v2 = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert torch.equal(v1[0]["image"], v2[0]["image"]) and v1[0]["caption"] == v2[0]["caption"]
    assert FreshBirds(16, seed=dm.seed)[0]["image"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="differ"):
        FreshBirdsDataModule(seed=3, val_seed=3)


def test_render_bird_can_leave_out_or_scatter_parts():
    def draw(**kw):
        rng = np.random.default_rng(9)
        return syn.render_bird(syn.sample_bird(rng, 3), 32, rng, **kw)

    image, labels = draw()
    _, no_beak = draw(omit=("beak", "tail"))
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    assert set(np.unique(no_beak)) == {0, 1, 2, 3}
    _, scattered = draw(scatter=0.6)
    assert (scattered != labels).mean() > 0.02


@pytest.mark.parametrize("config", ["stylegan2", "biggan", "stylegan2_64", "biggan_64"])
def test_mini_trainer_configs_use_the_yardstick(config, tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    from pbw.evaluation.yardstick import YardstickFeatures

    args = [
        "--config",
        f"pbw/configs/mini/{config}.yaml",
        "--trainer.logger",
        "false",
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.callbacks",
        "null",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
    ]
    if config.endswith("_64"):  # no data to prepare: one short iteration on fresh birds
        args += [
            "--data.init_args.batch_size",
            "4",
            "--data.init_args.num_workers",
            "0",
            "--trainer.max_steps",
            "2" if config.startswith("stylegan2") else "3",
            "--trainer.limit_val_batches",
            "0",
        ]
    else:
        args += ["--data.init_args.root", str(tmp_path)]
    cli = LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        save_config_callback=None,
        args=args,
    )
    assert isinstance(cli.model.metrics.fid.inception, YardstickFeatures)
    if config.endswith("_64"):
        assert isinstance(cli.datamodule, FreshBirdsDataModule) and cli.model.hparams.resolution == 64
        cli.trainer.fit(cli.model, cli.datamodule)
        assert int(cli.model.iteration) == 1 and cli.datamodule.state_dict()["next_index"] >= 4


class RecordingBirds(FreshBirds):
    """Fresh birds that remember which were drawn."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def __getitem__(self, k):
        self.seen.append(k)
        return super().__getitem__(k)


def test_a_resumed_run_goes_on_with_new_birds(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from pbw.training.stylegan2 import StyleGAN2Module

    def run(max_steps, ckpt_path=None):
        torch.manual_seed(0)
        model = StyleGAN2Module(
            resolution=32,
            z_dim=8,
            w_dim=8,
            mapping_layers=1,
            channel_base=64,
            channel_max=8,
            augment=False,
            num_metric_samples=0,
            grid_size=1,
        )
        data = FreshBirdsDataModule(resolution=32, batch_size=2, epoch_size=64, val_size=2)
        data.train_set = RecordingBirds(32, data.seed, 64)
        trainer = pl.Trainer(
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            limit_val_batches=0,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            callbacks=[ModelCheckpoint(tmp_path, save_last=True, every_n_train_steps=2)],
        )
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return data.train_set.seen

    first = run(2)  # one iteration (a D and a G step)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["FreshBirdsDataModule"]["next_index"]
    resumed = run(4, ckpt_path=str(tmp_path / "last.ckpt"))
    assert saved >= 2 and resumed[0] == saved and not set(first) & set(resumed)


def test_part_views_keep_the_named_parts_alone_on_blank():
    """With part_views=1 every item is the drawn bird (draw_bird) with only some parts' pixels kept and the
    rest 0, captioned with exactly those parts' colors, in the words of edit prompts."""
    from pbw.data.synthetic import PART_LABELS, PART_WORDS, PARTS, draw_bird

    data = FreshBirds(resolution=32, seed=5, captions=True, part_views=1.0)
    body_alone = 0
    for k in range(40):
        item = data[k]
        image, label_map, spec, _ = draw_bird(5, k, 32)
        whole = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
        kept = (item["image"] != 0).any(0).numpy() | (whole == 0).all(0).numpy()
        shown = {p for p in PARTS if (kept & (label_map == PART_LABELS[p])).any()}
        assert shown and not (kept & (label_map == 0)).any()  # no background
        assert torch.equal(item["image"][:, torch.from_numpy(kept)], whole[:, torch.from_numpy(kept)])
        caption = item["caption"]
        named = {p for p in PARTS if any(f"{spec.part_colors[p]} {w}" in caption for w in PART_WORDS[p])}
        assert named == shown, (caption, shown)
        body_alone += shown == {"body"}
    assert 10 < body_alone < 35  # about half show the body alone


def test_off_palette_birds_are_painted_between_the_palette_and_named_by_their_nearest_colors():
    """off_palette=1: every bird keeps its world pose but its parts take RGB colors off the palette, and
    the caption names each part by one of the palette colors nearest its pixels (mostly the nearest).
    off_palette=0 leaves the world's birds as draw_bird draws them."""
    from pbw.data.synthetic import PALETTE, PART_LABELS, PART_WORDS, draw_bird

    palette = np.array(list(PALETTE.values()), float)
    names = list(PALETTE)
    data = FreshBirds(resolution=64, seed=5, captions=True, off_palette=1.0)
    plain = FreshBirds(resolution=64, seed=5, captions=True)
    ranks = []
    for k in range(24):
        image, label_map, _, _ = draw_bird(5, k, 64)
        assert torch.equal(plain[k]["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
        item = data[k]
        body = ((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5)[label_map == PART_LABELS["body"]]
        color = np.median(body, 0)  # same pose: the world's body pixels
        dist = np.linalg.norm(palette - color, axis=1)
        said = [c for c in names if any(f"{c} {w}" in item["caption"] for w in PART_WORDS["body"])]
        if said:  # captions name a random subset of the parts
            ranks.append(int((dist < dist[names.index(said[0])]).sum()))
        assert dist.min() > 8  # not a palette color
    assert len(ranks) >= 8 and np.mean(np.array(ranks) == 0) >= 0.5 and max(ranks) <= 3, ranks


def test_color_names_follow_distance():
    """A palette color is named by itself nearly always; the midpoint of two colors by either of them."""
    from pbw.data.fresh_birds import name_color
    from pbw.data.synthetic import PALETTE

    rng = np.random.default_rng(0)
    for c, rgb in PALETTE.items():
        said = [name_color(np.array(rgb, float), rng) for _ in range(200)]
        assert said.count(c) >= 160, (c, said.count(c))
    mid = (np.array(PALETTE["pink"], float) + np.array(PALETTE["yellow"], float)) / 2
    said = [name_color(mid, rng) for _ in range(400)]
    assert said.count("pink") > 80 and said.count("yellow") > 80
