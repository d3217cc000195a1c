"""``pbw-checkpoints info FILE`` / ``convert IN OUT``: inspect or convert a checkpoint."""

from __future__ import annotations

import argparse
import sys

from pbw.checkpoints.core import CheckpointError, build_discriminator, build_generator, save_pbw_checkpoint
from pbw.checkpoints.loader import read_checkpoint
from pbw.commandline import OneLineParser


def describe(path: str) -> str:
    """A human-readable summary: format, family, resolution, architecture, networks and notes."""
    imported = read_checkpoint(path)
    lines = [
        f"file:          {path}",
        f"format:        {imported.format}",
        f"family:        {imported.family}",
        f"resolution:    {imported.resolution}",
        "generator:     " + ", ".join(f"{k}={v}" for k, v in imported.generator_kwargs.items()),
    ]
    for key in imported.generators:
        g = build_generator(imported, ema=key == "generator_ema")
        lines.append(f"  {key}: {sum(p.numel() for p in g.parameters()):,} parameters")
    d = build_discriminator(imported)
    if d is None:
        lines.append("discriminator: none in this file")
    else:
        lines.append(
            "discriminator: " + ", ".join(f"{k}={v}" for k, v in (imported.discriminator_kwargs or {}).items())
        )
        lines.append(f"  {sum(p.numel() for p in d.parameters()):,} parameters")
    lines += [f"note:          {n}" for n in imported.notes]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pbw-checkpoints", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the detected format, architecture and resolution")
    info.add_argument("file")
    convert = sub.add_parser("convert", help="write a pbw checkpoint from any supported file")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--discriminator", metavar="FILE", help="a separate discriminator file (BigGAN D.pth)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 on success; an unreadable or unsupported file is one line and status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            print(describe(args.file))
        else:
            imported = read_checkpoint(args.input, args.discriminator)
            save_pbw_checkpoint(imported, args.output, source=str(args.input))
            nets = sorted(imported.generators) + (["discriminator"] if imported.discriminator is not None else [])
            print(
                f"wrote {args.output}: {imported.format} -> pbw {imported.family} {imported.resolution} px "
                f"({', '.join(nets)})"
            )
    except (CheckpointError, FileNotFoundError) as e:
        print(f"pbw-checkpoints: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
