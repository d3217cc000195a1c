"""Settings that fit the generator (its checkpoint's recommended edit settings fill the ones left unset,
else the paper's step size 0.01), and an edit's console: pbw's own progress only."""

import logging
import warnings

import pytest
import torch

from pbw import assets
from pbw.checkpoints import load_generator
from pbw.checkpoints.core import CheckpointError, ImportedNetworks, save_pbw_checkpoint
from pbw.editing.editor import Editor, quiet_lightning
from pbw.editing.module import EditRequest, EditSettings
from pbw.models.stylegan2 import StyleGAN2Generator
from pbw.semantic import PromptSet, SemanticNet, register_model_configs

GK = dict(resolution=32, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=8)


def _saved(path, edit_settings):
    torch.manual_seed(0)
    nets = ImportedNetworks("pbw", "stylegan2", GK, {"generator_ema": StyleGAN2Generator(**GK).state_dict()})
    nets.edit_settings = edit_settings
    save_pbw_checkpoint(nets, path)
    return path


def test_recommended_settings_fill_what_is_left_unset(tmp_path):
    g = load_generator(_saved(tmp_path / "g.ckpt", {"masked": {"lr": 0.3}, "whole": {"lr": 0.02}}))
    assert g.edit_settings == {"masked": {"lr": 0.3}, "whole": {"lr": 0.02}}
    assert EditSettings().lr is None
    assert EditSettings().for_generator(g, masked=True).lr == 0.3
    assert EditSettings().for_generator(g, masked=False).lr == 0.02
    assert EditSettings(lr=0.5).for_generator(g, masked=True).lr == 0.5  # the user's choice wins
    plain = load_generator(_saved(tmp_path / "plain.ckpt", {}))
    assert plain.edit_settings == {} and EditSettings().for_generator(plain, True).lr == 0.01  # the paper's
    g.edit_settings = {"masked": {"learning_rate": 1.0}}
    with pytest.raises(ValueError, match="unknown edit settings \\['learning_rate'\\]"):
        EditSettings().for_generator(g, True)
    ckpt = torch.load(tmp_path / "g.ckpt", weights_only=True)
    ckpt["pbw"]["edit_settings"] = {"everything": {"lr": 1}}
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="'edit_settings' must map 'masked' and/or 'whole'"):
        load_generator(tmp_path / "bad.ckpt")


def test_the_bundled_generators_carry_the_step_sizes_their_measurements_chose():
    for family, masked in (("stylegan2", 0.8), ("biggan", 0.4)):
        g = load_generator(assets.mini_generator_path(family))
        assert g.edit_settings == {"masked": {"lr": masked}, "whole": {"lr": 0.05}}
        assert g.edit_settings == assets.MINI_EDIT_SETTINGS[family]


def test_an_edit_uses_the_generators_step_size_and_prints_only_pbws_progress(capfd):
    register_model_configs()
    g = load_generator(assets.mini_generator_path())
    editor = Editor(g, SemanticNet("pbw-tiny-clip", None, crops=2), device="cpu")
    codes = g.sample(1, seed=0)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    settings = EditSettings(steps=2, generations=1, population=4, crops=2)
    capfd.readouterr()
    masked, whole = editor.run(
        [EditRequest(PromptSet.parse("a red bird"), codes, mask), EditRequest(PromptSet.parse("a bird"), codes)],
        settings,
    )
    out = capfd.readouterr()
    assert masked.settings["lr"] == 0.8 and whole.settings["lr"] == 0.05
    console = out.out + out.err
    assert "CMA-ES" in console and "Adam" in console
    for noise in ("Tip", "litlogger", "GPU available", "TPU", "deprecated", "Epoch", "Trainer.fit", "v_num"):
        assert noise not in console, (noise, console)


def test_warnings_a_user_must_act_on_still_show():
    lightning = logging.getLogger("pytorch_lightning")
    level = lightning.level
    with quiet_lightning():
        assert lightning.isEnabledFor(logging.WARNING) and not lightning.isEnabledFor(logging.INFO)
        with pytest.warns(UserWarning, match="act on this"):
            warnings.warn("act on this", UserWarning, stacklevel=1)
    assert lightning.level == level
