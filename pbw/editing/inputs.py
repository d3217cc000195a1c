"""What the command lines and the app share below them: loading a generator to edit, and the errors a
user's input can cause (reported as one line, exit status 2)."""

from __future__ import annotations

from pbw.models.maskable import MaskableGenerator
from pbw.semantic import MissingWeightsError

INPUT_ERRORS = (ValueError, TypeError, OSError, MissingWeightsError)  # what a user's input can cause


def load_maskable(path: str) -> MaskableGenerator:
    """The maskable generator in checkpoint `path` (or `bundled:stylegan2` / `bundled:biggan`, the
    miniature's), or an error naming what was found."""
    from pbw.assets import resolve_generator_path
    from pbw.checkpoints import load_generator

    g = load_generator(resolve_generator_path(path))
    if not isinstance(g, MaskableGenerator):
        raise TypeError(f"{path} holds a {type(g).__name__}, not a generator pbw can edit (a MaskableGenerator)")
    return g
