"""What the editing command lines share, below them: pbw-edit's options (what its YAML configs hold,
parsed by jsonargparse), the Editor they describe, loading a generator to edit, and the errors a user's
input can cause (reported as one line, exit status 2). Read by pbw-edit, pbw-project, the app, the
reproduction's grid and the benchmarks."""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentParser

from pbw.assets import resolve_clip_spec, resolve_generator_path
from pbw.editing.editor import Editor, resolve_device
from pbw.editing.losses import PreservationLoss
from pbw.editing.module import EditSettings
from pbw.editing.project import ProjectSettings
from pbw.models.maskable import MaskableGenerator
from pbw.semantic import MissingWeightsError, SemanticNet

REQUEST_KEYS = {"prompt", "negative", "mask", "regions", "seed", "class", "name", "feather"}
INPUT_ERRORS = (ValueError, TypeError, OSError, MissingWeightsError)  # what a user's input can cause


def load_maskable(path: str) -> MaskableGenerator:
    """The maskable generator in checkpoint `path` (or `bundled:stylegan2` / `bundled:biggan`, the
    miniature's), or an error naming what was found."""
    from pbw.checkpoints import load_generator

    g = load_generator(resolve_generator_path(path))
    if not isinstance(g, MaskableGenerator):
        raise TypeError(f"{path} holds a {type(g).__name__}, not a generator pbw can edit (a MaskableGenerator)")
    return g


def build_parser() -> ArgumentParser:
    """The pbw-edit argument parser; every option can also come from a YAML `--config`."""
    p = ArgumentParser(prog="pbw-edit", description="Edit a generated image with words inside a mask (Paint by Word).")
    p.add_argument(
        "--config",
        action=ActionConfigFile,
        help="YAML file with any of these options, or a shipped config by name (edit/mini.yaml, edit/stylegan2_cub.yaml, ...)",
    )
    p.add_argument(
        "--generator",
        type=str,
        required=True,
        help="generator checkpoint (pbw or published format), or bundled:stylegan2 / bundled:biggan (the miniature's)",
    )
    p.add_argument(
        "--prompt", type=str | None, default=None, help="text, or weighted terms 'a red head::2 | a crown::1'"
    )
    p.add_argument("--negative", type=str | None, default=None, help="negative prompt(s), '|'-separated")
    p.add_argument(
        "--mask",
        type=str | None,
        default=None,
        help="PNG/JPEG (white = edit), .npy, rectangle 'x0,y0,x1,y1' (pixels or 0..1), or bird parts "
        "'part:body' (body, head, wing, tail, beak; 'part:body+wing'; found in the start image "
        "by the mini part segmenter); none: whole image",
    )
    p.add_argument(
        "--region",
        nargs=2,
        action="append",
        default=None,
        metavar=("PROMPT", "MASK"),
        help="one region of an edit of several, each with its own words and mask (as --prompt and --mask); "
        "repeat it: --region 'a red head' part:head --region 'blue wings' part:wing. Where masks overlap, "
        "the later region wins",
    )
    p.add_argument("--feather", type=float, default=0.0, help="soften the mask edge by this many pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting image")
    p.add_argument("--class", dest="class_", type=int | None, default=None, help="class label (BigGAN)")
    p.add_argument("--out", type=str, default="edit_out", help="output folder")
    p.add_argument(
        "--requests",
        type=str | None,
        default=None,
        help="JSONL file, one request per line with keys " + ", ".join(sorted(REQUEST_KEYS)) + " (regions: a list "
        'of {"prompt", "mask", "negative"}, instead of prompt and mask); each is saved as it finishes, and '
        "rerunning the same command resumes",
    )
    p.add_argument(
        "--restart",
        type=bool,
        default=False,
        help="--requests: start over, deleting what a previous run saved in --out (a rerun without it resumes)",
    )
    p.add_argument(
        "--fail_fast",
        type=bool,
        default=False,
        help="--requests: stop at the first request that fails (default: record it, go on, exit with status 3)",
    )
    p.add_argument(
        "--clip",
        type=str,
        default="ViT-B-32:openai",
        help="NAME[:TAG|:FILE|:random] or hf-hub:ORG/REPO or local-dir:PATH, or bundled:clip (the miniature's)",
    )
    p.add_argument("--clip_cache_dir", type=str | None, default=None)
    p.add_argument("--view", type=str, default="paste_onto_blank", help="paste_onto_blank | zoom")
    p.add_argument("--lpips", type=bool, default=True, help="use LPIPS in the preservation loss")
    p.add_argument("--lpips_net", type=str, default="alex")
    p.add_argument(
        "--lpips_weights", type=str | None, default=None, help="local torchvision backbone weights for LPIPS (offline)"
    )
    p.add_argument("--device", type=str, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--wandb_project", type=str | None, default=None, help="log to this W&B project")
    p.add_argument("--wandb_name", type=str | None, default=None)
    p.add_argument("--progress", type=bool, default=True)
    p.add_argument("--debug", type=bool, default=False, help="show the traceback of an input error")
    p.add_class_arguments(EditSettings, "settings", help="the optimization (EditSettings)")
    p.add_argument(
        "--image",
        type=str | None,
        default=None,
        help="edit this photo instead of a generated image: it is projected into the generator first "
        "(resized, center-cropped); or a saved projection (pbw-project's folder)",
    )
    p.add_class_arguments(ProjectSettings, "projection", help="the projection of --image (ProjectSettings)")
    return p


def build_editor(args) -> Editor:
    """The Editor of instantiated pbw-edit `args`: their generator, CLIP, view, preservation loss and device."""
    device = resolve_device(args.device)
    g = load_maskable(args.generator)
    g.space(args.settings.space, masked=True)  # a space this generator lacks: an input error, now
    semantic = SemanticNet.from_spec(
        resolve_clip_spec(args.clip), crops=args.settings.crops, view=args.view, cache_dir=args.clip_cache_dir
    )
    preservation = PreservationLoss(args.lpips, args.lpips_net, args.lpips_weights)
    info = {
        "generator": args.generator,
        "clip": args.clip,
        "view": args.view,
        "lpips": args.lpips,
        "lpips_net": args.lpips_net,
        "device": str(device),
    }
    return Editor(g, semantic, preservation, device, info=info)
