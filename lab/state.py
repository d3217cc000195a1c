"""The bundled mini StyleGAN2 as a trainer module, for the lab's experiments and fine-tuning runs.

The bundle keeps the EMA generator and the discriminator; the trained generator starts as a copy of
the EMA one, and Adam's moments start afresh (the resumable training state is not kept)."""

from __future__ import annotations

import torch
import yaml

from pbw.assets import mini_generator_path
from pbw.configs import config_path
from pbw.training.stylegan2 import StyleGAN2Module


def load_module() -> StyleGAN2Module:
    """StyleGAN2Module of `mini/stylegan2_64.yaml` holding the bundle's weights (no FID extractor)."""
    model = yaml.safe_load(config_path("mini/stylegan2_64.yaml").read_text())["model"]["init_args"]
    model.update(feature_extractor=None, num_metric_samples=0)
    module = StyleGAN2Module(**model)
    state = torch.load(mini_generator_path("stylegan2"), map_location="cpu", weights_only=True)["state_dict"]
    ema = {k: v for k, v in state.items() if k.startswith("generator_ema.")}
    module.load_state_dict(
        {**state, **{"generator." + k.removeprefix("generator_ema."): v for k, v in ema.items()}}, strict=False
    )
    return module.eval()
