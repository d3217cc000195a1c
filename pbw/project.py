"""`pbw-project PHOTO --generator G --out DIR`: project a photo into a generator.

Writes into DIR what `EditResult.save` writes for the projection (latents.pt with the codes, and
generator.pt with the weights of pivotal tuning; original.png = edited.png = the photo as projected,
metrics.json) plus reconstruction.png (the generator's image of the codes) and comparison.png
(photo | reconstruction, labelled, each upscaled to at least 256 px). Edit it with `pbw-edit --image DIR
--prompt ... --mask ...` (a saved projection is not projected again), or in Python with
`EditResult.load(DIR)` as an edit's base. The projection settings are `ProjectSettings`
(`--settings.steps 300`, `--settings.tune_steps 0`, ...). A bad input (unreadable or tiny image,
unknown generator) is one line on stderr and exit status 2.

PHOTO may be a folder: every image in it is projected into DIR/<name>/, each saved as it finishes, so
rerunning the same command resumes (a photo replaced since is projected again); a photo that fails is recorded in DIR/summary.json, the others go
on, and the command exits with status 3 (`--fail_fast true`: it stops at the first).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from pbw.configs import resolve_config_args
from pbw.data.common import IMAGE_EXTENSIONS
from pbw.editing.editor import EditFailure, one_line, resolve_device
from pbw.editing.options import INPUT_ERRORS, load_maskable
from pbw.editing.project import ProjectSettings, build_perceptual, project, save_projection
from pbw.editing.result import EditResult
from pbw.editing.resume import (
    claim,
    read_record,
    request_folders,
    save_request,
    saved_requests,
    write_text_atomic,
)

SUMMARY = "summary.json"
FAILED_STATUS = 3  # the exit status of a folder of photos of which some failed


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="pbw-project",
        description="Project a photo into a generator (latent search, then pivotal tuning).",
    )
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options")
    p.add_argument(
        "photo",
        type=str,
        help="image file (any size and mode: resized, center-cropped, converted to RGB), or a folder of them",
    )
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
    p.add_argument("--restart", type=bool, default=False, help="a folder of photos: start over instead of resuming")
    p.add_argument("--fail_fast", type=bool, default=False, help="a folder of photos: stop at the first failure")
    p.add_class_arguments(ProjectSettings, "settings", help="the projection (ProjectSettings)")
    return p


def main(argv: list[str] | None = None) -> EditResult | list[dict]:
    parser = build_parser()
    args = parser.parse_args(resolve_config_args(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.instantiate(args)
        lpips = {"true": True, "false": False}.get(str(args.lpips).lower(), str(args.lpips).lower())
        if Path(args.photo).is_dir():
            photos = photo_files(args.photo)
            claim(Path(args.out), _run_config(args, photos), args.restart, [SUMMARY, *request_folders(args.out)])
        perceptual, loss_note = build_perceptual(lpips, args.lpips_net, args.lpips_weights)
        g = load_maskable(args.generator)
        device = resolve_device(args.device)
        if Path(args.photo).is_dir():
            return _project_folder(args, photos, g, perceptual, loss_note, device)
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
        print(f"pbw-project: error: {e}", file=sys.stderr)
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


def photo_files(folder: str | Path) -> list[Path]:
    """The images in `folder` (not its subfolders), by name; an error when it has none."""
    photos = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        raise FileNotFoundError(f"{folder} holds no photo ({', '.join(IMAGE_EXTENSIONS)})")
    return photos


def _run_config(args, photos: list[Path]) -> dict:
    """What a folder's projections are computed from; a rerun into the same --out must match it."""
    keep = ("generator", "class_", "lpips", "lpips_net", "lpips_weights", "device")
    config = {k: getattr(args, k) for k in keep}
    return {**config, "settings": asdict(args.settings), "photos": [p.name for p in photos]}


def _digest(photo: Path) -> str:
    return hashlib.sha1(photo.read_bytes()).hexdigest()


def _project_folder(args, photos: list[Path], g, perceptual, loss_note: str, device) -> list[dict]:
    """Project every photo of a folder into OUT/<name>/ (resuming those saved before); returns the rows of
    OUT/summary.json and exits with status 3 when some failed."""
    out = Path(args.out)
    folders = [out / p.stem for p in photos]
    digests = [_digest(p) for p in photos]  # a photo replaced since it was saved is projected again
    done = {i for i, record in saved_requests(folders).items() if record.get("photo_sha1") == digests[i]}
    print(f"{len(photos)} photo(s) to project, {len(done)} resumed", flush=True)
    count = len(done)
    for i, (photo, folder) in enumerate(zip(photos, folders, strict=True)):
        if i in done:
            continue
        try:
            result = project(
                photo,
                g,
                args.settings,
                perceptual=perceptual,
                classes=args.class_,
                device=device,
                progress=args.progress,
                name=photo.stem,
                notes=[loss_note],
            )
            result.settings.update(generator=args.generator)
        except Exception as e:
            if args.fail_fast:
                raise
            result = EditFailure(photo.stem, one_line(e))
        save_request(folder, result, [folder.name], write=lambda r, d: save_projection(r, g, d), photo_sha1=digests[i])
        count += 1
        print(f"{count} of {len(photos)} done, {len(done)} resumed", flush=True)
    rows = []
    for photo, folder in zip(photos, folders, strict=True):
        record = read_record(folder) or {"error": "not projected"}
        row = {"photo": photo.name, "folder": str(folder), "status": "failed" if record["error"] else "ok"}
        if record["error"]:
            row["error"] = record["error"]
        else:
            row.update(json.loads((folder / "metrics.json").read_text())["metrics"])
        rows.append(row)
    write_text_atomic(out / SUMMARY, json.dumps(rows, indent=2))
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"{len(rows) - len(failed)}/{len(rows)} photos projected; summary: {out / SUMMARY}")
    for r in failed:
        print(f"  failed: {r['photo']}: {r['error']}")
    if failed:
        raise SystemExit(FAILED_STATUS)
    return rows


def console_main() -> None:
    """The `pbw-project` console script: `main` without its return value (a console script exits with it)."""
    main()


if __name__ == "__main__":
    main()
