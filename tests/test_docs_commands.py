"""Every command in the README and the docs parses with the command line it names, so text and CLI cannot
drift apart: each `pbw-*` line of a ```bash block is parsed by that command's own parser (nothing runs),
each `python -m MODULE` line names a module that exists, and each ```python block compiles."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(language: str) -> list[tuple[str, str]]:
    """(page name, block text) of every fenced block in `language`."""
    return [
        (page.relative_to(REPO).as_posix(), m.group(2))
        for page in PAGES
        for m in FENCE.finditer(page.read_text(encoding="utf-8"))
        if m.group(1) == language
    ]


def commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of each shell command: continuation lines joined, comments dropped."""
    found = []
    for page, text in blocks("bash"):
        for line in text.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[-1] == "&":  # run in the background: the same command
                words = words[:-1]
            if words and (words[0].startswith("pbw-") or words[:2] == ["python", "-m"]):
                found.append((page, words))
    return found


def parse_edit(argv):
    from pbw.configs import resolve_config_args
    from pbw.editing.options import build_parser

    build_parser().parse_args(resolve_config_args(argv))


def parse_project(argv):
    from pbw.configs import resolve_config_args
    from pbw.project import build_parser

    build_parser().parse_args(resolve_config_args(argv))


def parse_app(argv):
    from pbw.app.__main__ import build_parser

    build_parser().parse_args(argv)


def parse_checkpoints(argv):
    from pbw.checkpoints.__main__ import build_parser

    build_parser().parse_args(argv)


def parse_reproduce(argv):
    from pbw.configs import resolve_config_args
    from pbw.reproduce import cli

    command, rest = argv[0], resolve_config_args(argv[1:])
    if command == "run":
        cli.parse_run(rest)
    else:
        parser = {"mini": cli.mini_parser, "grid": cli.grid_parser, "bundle": cli.bundle_parser}[command]()
        parser.parse_args(rest)


def parse_train(argv):
    """LightningCLI parses the whole config (model, data, trainer) and prints it instead of training."""
    from pbw.cli import train_main

    with pytest.raises(SystemExit) as stop:
        train_main([*argv, "--print_config"])
    assert stop.value.code in (0, None)


PARSERS = {
    "pbw-edit": parse_edit,
    "pbw-project": parse_project,
    "pbw-app": parse_app,
    "pbw-checkpoints": parse_checkpoints,
    "pbw-reproduce": parse_reproduce,
    "pbw-train": parse_train,
}


def test_the_docs_have_commands_to_check():
    names = {argv[0] for _, argv in commands()}
    assert {"pbw-edit", "pbw-train", "pbw-reproduce", "pbw-project", "pbw-app", "pbw-checkpoints"} <= names


@pytest.mark.parametrize(("page", "argv"), commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:70])
def test_command_parses(page, argv, capsys):
    if argv[0] == "python":
        module = argv[2]
        assert importlib.util.find_spec(module) is not None, f"{page}: no module {module}"
        return
    assert argv[0] in PARSERS, f"{page}: {argv[0]} is not a pbw command"
    try:
        PARSERS[argv[0]](argv[1:])
    except SystemExit as e:  # argparse/jsonargparse report a bad command line this way
        pytest.fail(f"{page}: `{shlex.join(argv)}` does not parse (exit {e.code}): {capsys.readouterr().err[-500:]}")


@pytest.mark.parametrize(
    ("page", "code"), blocks("python"), ids=lambda x: x if isinstance(x, str) and "\n" not in x else ""
)
def test_python_example_compiles(page, code):
    compile(code, page, "exec")
