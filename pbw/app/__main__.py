"""`pbw-app`: start the local Paint-by-Word page (bound to 127.0.0.1 unless --host says otherwise)."""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from pbw import assets
from pbw.app.core import APP_PROJECTION, APP_SETTINGS, BARELY_MOVED, TIME_LIMIT, Painter
from pbw.editing.losses import PreservationLoss
from pbw.editing.module import EditSettings
from pbw.editing.options import load_maskable
from pbw.editing.project import ProjectSettings
from pbw.semantic import SemanticNet


class UsageError(SystemExit):
    """A mistake on the command line: its message on stderr, exit status 2."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="pbw-app", description="Paint by Word in the browser.")
    p.add_argument(
        "--generator",
        type=str | None,
        default=None,
        help=f"generator checkpoint (default: the bundled mini StyleGAN2 in {assets.MINI_DIR})",
    )
    p.add_argument(
        "--clip",
        type=str | None,
        default=None,
        help=f"CLIP spec as in pbw-edit, NAME[:TAG|:FILE|:random] or local-dir:PATH "
        f"(default: the bundled mini CLIP in {assets.MINI_DIR})",
    )
    p.add_argument("--host", type=str, default="127.0.0.1", help="address to bind (0.0.0.0 exposes the page)")
    p.add_argument("--port", type=int | None, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--device", type=str, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--lpips_weights",
        type=str | None,
        default=None,
        help="local torchvision backbone weights: adds LPIPS to the preservation loss (else L1 only)",
    )
    p.add_argument(
        "--time_limit",
        type=float,
        default=TIME_LIMIT,
        help="seconds after which an edit stops and shows what it reached",
    )
    p.add_argument(
        "--barely_moved",
        type=float,
        default=BARELY_MOVED,
        help="the page warns that an edit did not take when the words' CLIP score rose by less than this "
        "(chosen for the bundled tiny CLIP; cosines of other CLIPs move less: set it for yours)",
    )
    p.add_argument("--out", type=str | None, default=None, help="folder for downloadable results (default: a temp dir)")
    p.add_argument(
        "--parts",
        type=bool | None,
        default=None,
        help="offer 'Select part' (bird-part masks by the mini world's part segmenter, which knows only "
        "the synthetic birds); default: on for the bundled mini generators only",
    )
    p.add_class_arguments(
        EditSettings,
        "settings",
        default=APP_SETTINGS,
        help="the edits' settings (EditSettings; lr null: the generator's own step size); the page sets "
        "optimizer, step size, steps, generations, lam and seed per edit, starting from these",
    )
    p.add_class_arguments(
        ProjectSettings,
        "projection",
        default=APP_PROJECTION,
        help="the projection of an uploaded photo (ProjectSettings)",
    )
    return p


def resolve_models(generator: str | None, clip: str | None) -> tuple[str, str]:
    """The generator and CLIP to use: the given ones, or the bundled mini checkpoints when present."""
    if generator is None and clip is None:
        try:
            return str(assets.mini_generator_path()), assets.mini_clip_spec()
        except FileNotFoundError as err:
            raise UsageError(
                f"pbw-app: {err}; or pass your own: --generator CKPT --clip SPEC "
                f"(e.g. --clip ViT-B-32:/path/to/weights.pt)"
            ) from err
    if generator is None or clip is None:
        raise UsageError("pbw-app: give both --generator and --clip, or neither (the bundled mini ones)")
    return generator, clip


def resolve_parts(parts: bool | None, generator: str) -> bool:
    """Whether the page offers bird parts: as asked, else for a bundled mini generator; either way only
    with the bundled part segmenter present."""
    if parts is False or (parts is None and Path(generator).resolve().parent != assets.MINI_DIR):
        return False
    try:
        assets.mini_segmenter_path("masks")
    except FileNotFoundError as err:
        if parts:
            raise UsageError(f"pbw-app --parts true: {err}") from err
        return False
    return True


def build_painter(argv: list[str] | None = None) -> tuple[Painter, object]:
    """The page's `Painter` from command-line arguments (the page's defaults for none), and the arguments."""
    parser = build_parser()
    args = parser.instantiate(parser.parse_args(argv))
    generator_path, clip = resolve_models(args.generator, args.clip)
    painter = Painter(
        load_maskable(generator_path),
        SemanticNet.from_spec(clip, crops=args.settings.crops),
        PreservationLoss(args.lpips_weights is not None, lpips_weights=args.lpips_weights),
        args.device,
        args.settings,
        time_limit=args.time_limit,
        out_dir=args.out,
        projection=args.projection,
        parts=resolve_parts(args.parts, generator_path),
        barely_moved=args.barely_moved,
    )
    return painter, args


def main(argv: list[str] | None = None, block: bool = True):
    """Parse arguments, load the models, serve the page; returns the Gradio app when not `block`ing."""
    from pbw.app.ui import CSS, build_page

    painter, args = build_painter(argv)
    page = build_page(painter)
    page.launch(
        server_name=args.host,
        server_port=args.port,
        prevent_thread_lock=not block,
        allowed_paths=[str(painter.out_dir)],
        inbrowser=False,
        show_error=True,
        css=CSS,
    )
    return page


def console_main() -> None:
    """The `pbw-app` console script: `main` without its return value (a console script exits with it)."""
    main()


if __name__ == "__main__":
    try:
        main()
    except UsageError as e:
        print(e, file=sys.stderr)
        raise
