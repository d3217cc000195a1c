"""The semantic network C(x, t): an open_clip wrapper (see `clip.py`)."""

from pbw.semantic.clip import (
    MODEL_CONFIG_DIR,
    MissingWeightsError,
    PromptSet,
    SemanticNet,
    parse_clip_spec,
    register_model_configs,
)

__all__ = [
    "MODEL_CONFIG_DIR",
    "MissingWeightsError",
    "PromptSet",
    "SemanticNet",
    "parse_clip_spec",
    "register_model_configs",
]
