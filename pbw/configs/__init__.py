"""The configs pbw ships (training, editing, experiments, logging), found by name from anywhere.

`--config edit/mini.yaml` names a shipped config; a path to a file of your own works as well and is
preferred when both exist. `pbw-train --help`, `pbw-edit --help` and `pbw-reproduce --help` list them.
"""

from importlib.resources import files
from pathlib import Path


def shipped_configs() -> list[str]:
    """Every shipped config, as the name `--config` takes (e.g. `stylegan2/cub256.yaml`)."""
    root = Path(str(files(__name__)))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """A config file: `name` itself if it exists, else the shipped config of that name."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = Path(str(files(__name__))) / str(name)
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"config {str(name)!r} is neither a file nor a shipped config; shipped: {', '.join(shipped_configs())}"
    )


def resolve_config_args(argv: list[str]) -> list[str]:
    """`argv` with each `--config NAME` (or `--config=NAME`) that names a shipped config replaced by its
    path; anything else is left for the parser to judge."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = _resolved(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _resolved(arg.split("=", 1)[1])
    return out


def _resolved(value: str) -> str:
    try:
        return str(config_path(value))
    except FileNotFoundError:
        return value
