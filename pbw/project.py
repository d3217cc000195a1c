"""`python -m pbw.project PHOTO --generator G --out DIR`: project a photo into a generator.

Writes into DIR what `EditResult.save` writes for the projection (latents.pt with the codes, and
generator.pt with the weights of pivotal tuning; original.png = edited.png = the photo as projected,
metrics.json) plus reconstruction.png (the generator's image of the codes) and comparison.png
(photo | reconstruction, labelled, each upscaled to at least 256 px). Edit it with `edit.py --image DIR
--prompt ... --mask ...` (a saved projection is not projected again), or in Python with
`EditResult.load(DIR)` as an edit's base. The projection settings are `ProjectSettings`
(`--settings.steps 300`, `--settings.tune_steps 0`, ...). A bad input (unreadable or tiny image,
unknown generator) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from pbw.configs import resolve_config_args
from pbw.editing.editor import resolve_device
from pbw.editing.inputs import INPUT_ERRORS, load_maskable
from pbw.editing.project import ProjectSettings, build_perceptual, project, save_projection
from pbw.editing.result import EditResult


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m pbw.project",
        description="Project a photo into a generator (latent search, then pivotal tuning).",
    )
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options")
    p.add_argument("photo", type=str, help="image file (any size and mode: resized, center-cropped, converted to RGB)")
    p.add_argument("--generator", type=str, required=True, help="generator checkpoint (pbw or published format)")
    p.add_argument("--out", type=str, default="project_out", help="output folder")
    p.add_argument(
        "--class",
        dest="class_",
        type=int | None,
        default=None,
        help="BigGAN: search the start in this class only (default: every class)",
    )
    p.add_argument(
        "--lpips",
        type=str,
        default="auto",
        help="perceptual loss: auto (LPIPS when its backbone loads, else pixels only) | true | false",
    )
    p.add_argument("--lpips_net", type=str, default="alex")
    p.add_argument(
        "--lpips_weights", type=str | None, default=None, help="local torchvision backbone weights for LPIPS (offline)"
    )
    p.add_argument("--device", type=str, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--progress", type=bool, default=True)
    p.add_argument("--debug", type=bool, default=False, help="show the traceback of an input error")
    p.add_class_arguments(ProjectSettings, "settings", help="the projection (ProjectSettings)")
    return p


def main(argv: list[str] | None = None) -> EditResult:
    parser = build_parser()
    args = parser.parse_args(resolve_config_args(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.instantiate(args)
        lpips = {"true": True, "false": False}.get(str(args.lpips).lower(), str(args.lpips).lower())
        perceptual, loss_note = build_perceptual(lpips, args.lpips_net, args.lpips_weights)
        g = load_maskable(args.generator)
        device = resolve_device(args.device)
        result = project(
            args.photo,
            g,
            args.settings,
            perceptual=perceptual,
            classes=args.class_,
            device=device,
            progress=args.progress,
            name=Path(args.photo).stem,
            notes=[loss_note],
        )
    except INPUT_ERRORS as e:
        if args.debug:
            raise
        print(f"python -m pbw.project: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    result.settings.update(generator=args.generator)
    files = save_projection(result, g, args.out)
    for note in result.notes:
        print(f"note: {note}")
    m = result.metrics
    tuned = f" (before pivotal tuning {m['psnr_before_tuning']:.2f} dB)" if "psnr_before_tuning" in m else ""
    print(f"reconstruction PSNR {m['psnr']:.2f} dB{tuned}, L1 {m['l1']:.4f}; {m['seconds']:.1f} s")
    print(f"projected: {files['comparison']} (photo | reconstruction); codes: {files['latents']}")
    return result


def console_main() -> None:
    """The `pbw-project` console script: `main` without its return value (a console script exits with it)."""
    main()


if __name__ == "__main__":
    main()
