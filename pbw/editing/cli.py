"""`pbw-edit`: paint by word from the command line, a thin client of the editing core.

Every option can come from a YAML `--config`; the optimization settings are `EditSettings`
(`--settings.steps 100`, or a `settings:` mapping in the YAML). A mistake in the input (a bad mask,
no prompt, a missing file) is one line on stderr and exit status 2 (`--debug` shows the traceback).

With `--requests`, each request is saved as it finishes and a rerun of the same command resumes; a
request that fails is recorded in summary.csv/json and the others go on (exit status 3 when some failed).
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from pbw.configs import resolve_config_args
from pbw.editing.editor import Editor
from pbw.editing.masks import is_part_spec, load_mask
from pbw.editing.options import INPUT_ERRORS, REQUEST_KEYS, build_editor, build_parser
from pbw.editing.request import EditRequest, Region
from pbw.editing.result import EditResult
from pbw.editing.resume import claim, read_record, request_folders, save_request, saved_requests
from pbw.models.maskable import MaskableGenerator
from pbw.semantic import PromptSet

REGION_KEYS = {"prompt", "mask", "negative"}
SUMMARY_METRICS = ("semantic_score", "realism", "preservation_l1", "preservation_lpips", "loss")
FAILED_STATUS = 3  # the exit status of a --requests run in which some requests failed
# options that do not change what a --requests run computes (a rerun may change them and still resume)
NOT_RUN_CONFIG = {"config", "out", "progress", "debug", "wandb_project", "wandb_name", "restart", "fail_fast"}
RESULT_FILES = ("summary.csv", "summary.json", "projection")  # with the request folders: what --restart deletes


def make_request(g: MaskableGenerator, spec: dict, defaults) -> EditRequest:
    """An EditRequest from one request's keys, missing ones taken from the command line."""
    unknown = set(spec) - REQUEST_KEYS
    if unknown:
        raise ValueError(f"unknown request keys {sorted(unknown)}; allowed: {sorted(REQUEST_KEYS)}")
    cls = spec.get("class", defaults.class_)
    codes = g.sample(1, seed=int(spec.get("seed", defaults.seed)), **({"classes": cls} if cls is not None else {}))
    feather = float(spec.get("feather", defaults.feather))
    negative = spec.get("negative", defaults.negative)
    regions = _region_specs(spec, defaults)
    if regions:
        parts = [_region(g, codes, r, negative, feather, i) for i, r in enumerate(regions)]
        notes = [n for _, ns in parts for n in ns]
        return EditRequest(codes=codes, name=str(spec.get("name", "")), notes=notes, regions=[r for r, _ in parts])
    prompt = spec.get("prompt", defaults.prompt)
    if not prompt:
        raise ValueError("no prompt: give --prompt (or --region PROMPT MASK) or a 'prompt' in the request")
    mask_spec, notes, mask = spec.get("mask", defaults.mask), [], None
    if mask_spec is not None:
        mask, notes = _mask(g, codes, mask_spec, feather)
    return EditRequest(PromptSet.parse(prompt, negative), codes, mask, str(spec.get("name", "")), notes)


def _region_specs(spec: dict, defaults) -> list[dict]:
    """A request's regions as {"prompt", "mask"[, "negative"]} (the request's own, else --region's)."""
    if "regions" in spec:
        regions = spec["regions"]
        if {"prompt", "mask"} & set(spec):
            raise ValueError("a request has 'prompt' and 'mask', or 'regions', not both")
        ok = isinstance(regions, list) and regions and all(isinstance(r, dict) for r in regions)
        if not ok or any(set(r) - REGION_KEYS or not {"prompt", "mask"} <= set(r) for r in regions):
            raise ValueError(
                'regions must be a list of {"prompt": ..., "mask": ...} (optionally "negative"), '
                f"got {json.dumps(regions)[:200]}"
            )
        return regions
    if "prompt" in spec or "mask" in spec or not defaults.region:
        return []
    if defaults.prompt is not None or defaults.mask is not None:
        raise ValueError("give --prompt and --mask (one region) or --region PROMPT MASK (repeatable), not both")
    return [{"prompt": p, "mask": m} for p, m in defaults.region]


def _region(g: MaskableGenerator, codes, spec: dict, negative, feather: float, index: int) -> tuple[Region, list[str]]:
    if not spec["prompt"]:
        raise ValueError(f"region {index + 1} has no prompt")
    mask, notes = _mask(g, codes, spec["mask"], feather)
    words = PromptSet.parse(spec["prompt"], spec.get("negative", negative))
    return Region(words, mask), [f"region {index + 1}: {n}" for n in notes]


def _mask(g: MaskableGenerator, codes, spec: str, feather: float) -> tuple[torch.Tensor, list[str]]:
    image = None
    if is_part_spec(spec):  # a part mask is found in the start image
        with torch.no_grad():
            image = g.decode(g.encode(codes), cond=codes)
    return load_mask(spec, g.resolution, feather, image=image)


def _read_requests(args, g) -> tuple[list[dict], list[EditRequest | None]]:
    """Summary rows and requests (None where a line is unusable; its row says why)."""
    if not args.requests:
        req = make_request(g, {}, args)
        req.name = "edit"
        return [{"index": 0, "name": "edit", "status": "ok", "error": "", "folder": args.out}], [req]
    rows, requests = [], []
    lines = [ln for ln in Path(args.requests).read_text().splitlines() if ln.strip()]
    for idx, line in enumerate(lines):
        row = {"index": idx, "name": "", "status": "ok", "error": "", "folder": ""}
        try:
            try:
                spec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"line {idx + 1} of {args.requests} is not JSON: {e}") from None
            req = make_request(g, spec, args)
            req.name = req.name or f"{idx:03d}"
            row.update(name=req.name, prompt=" / ".join(" | ".join(r.prompt.texts) for r in req.all_regions))
        except INPUT_ERRORS as e:
            req = None
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
        rows.append(row)
        requests.append(req)
    return rows, requests


def prepare(args) -> tuple[Editor, list[dict], list[EditRequest | None], object]:
    """The input phase: models, requests and logger from `args`. Errors here are the user's input's."""
    if args.prompt is None and args.requests is None and not args.region:
        raise ValueError(
            "give --prompt (with --mask for a masked edit), --region PROMPT MASK (repeatable) or --requests FILE.jsonl"
        )
    if args.requests:
        claim(Path(args.out), _run_config(args), args.restart, [*RESULT_FILES, *request_folders(args.out)])
    editor = build_editor(args)
    rows, requests = _read_requests(args, editor.generator)
    if args.requests and args.fail_fast:
        bad = next((r for r in rows if r["status"] == "failed"), None)
        if bad is not None:
            raise ValueError(f"request {bad['index']}: {bad['error']}")
    if args.image:
        requests = _photo_requests(args, editor, requests)
    logger = False
    if args.wandb_project:
        from pytorch_lightning.loggers import WandbLogger

        logger = WandbLogger(project=args.wandb_project, name=args.wandb_name, save_dir=args.out)
    return editor, rows, requests, logger


def _photo_requests(args, editor: Editor, requests: list[EditRequest | None]) -> list[EditRequest | None]:
    """The requests, each starting from the projection of --image (saved in OUT/projection) instead of a seed."""
    from dataclasses import replace

    from pbw.editing.project import edit_space, project, save_projection
    from pbw.editing.result import EditResult

    path = Path(args.image)
    saved = Path(args.out) / "projection"
    if path.is_dir() or path.suffix == ".pt":  # a saved projection
        photo = EditResult.load(path, editor.generator)
    elif args.requests and (saved / "latents.pt").is_file():  # this run's, made before it was stopped
        photo = EditResult.load(saved, editor.generator)
        print(f"resumed the projection of {path}: {saved}")
    else:
        lpips = editor.preservation.lpips
        photo = project(
            path,
            editor.generator,
            args.projection,
            perceptual=lpips,
            classes=args.class_,
            device=editor.device,
            progress=args.progress,
            name=path.stem,
            notes=["projection loss: " + ("LPIPS + pixels" if lpips is not None else "pixels (MSE) only")],
        )
        save_projection(photo, editor.generator, Path(args.out) / "projection")
        print(f"projected {path}: PSNR {photo.metrics['psnr']:.2f} dB; {Path(args.out) / 'projection'}")
    if args.settings.space is None:
        args.settings = replace(args.settings, space=edit_space(photo, editor.generator))
    return [
        None if r is None else replace(r, codes=None, base=photo, notes=list(photo.notes) + r.notes) for r in requests
    ]


def run(args, editor: Editor, rows: list[dict], requests: list[EditRequest | None], logger) -> list[dict]:
    """Edit the usable requests, save each result as it finishes; returns the summary rows. With
    --requests, requests a previous run saved in --out are not edited again."""
    out = Path(args.out)
    if not args.requests:
        res = editor.run(requests, args.settings, progress=args.progress, logger=logger)[0]
        res.save(out)
        rows[0].update(folder=str(out), **{k: res.metrics.get(k, "") for k in SUMMARY_METRICS})
        print(f"edited: {out / 'comparison.png'} (original | mask | edited)")
        return rows
    ready = [i for i, r in enumerate(requests) if r is not None]
    folders = [out / f"{i:03d}_{_safe(requests[i].name)}" for i in ready]
    done = set(saved_requests(folders))
    count = len(done)

    def save(indices: list[int], results: list) -> None:  # as each group of requests finishes
        nonlocal count
        unit = [folders[j].name for j in indices]
        for j, res in zip(indices, results, strict=True):
            save_request(folders[j], res, unit)
        count += len(indices)
        print(f"{count} of {len(ready)} done, {len(done)} resumed", flush=True)

    print(f"{len(ready)} request(s) to edit, {len(done)} resumed", flush=True)
    editor.run(
        [requests[i] for i in ready],
        args.settings,
        keep_going=not args.fail_fast,
        progress=args.progress,
        logger=logger,
        done=done,
        on_batch_end=save,
    )
    for i, folder in zip(ready, folders, strict=True):
        record = read_record(folder) or {"error": "not edited"}
        if record["error"]:
            rows[i].update(status="failed", error=record["error"])
            continue
        metrics = EditResult.load(folder).metrics
        rows[i].update(folder=str(folder), **{k: metrics.get(k, "") for k in SUMMARY_METRICS})
    _write_summary(out, rows, logger)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Run pbw-edit; an input error exits with status 2 and one line (unless --debug)."""
    parser = build_parser()
    args = parser.parse_args(resolve_config_args(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.instantiate(args)  # settings -> EditSettings, checked
        prepared = prepare(args)
    except INPUT_ERRORS as e:
        if args.debug:
            raise
        print(f"pbw-edit: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    rows = run(args, *prepared)
    if any(r["status"] == "failed" for r in rows):
        raise SystemExit(FAILED_STATUS)
    return rows


def _run_config(args) -> dict:
    """What a --requests run computes from: its options (but where it writes and how it reports) and the
    requests file's lines; a rerun into the same --out must match it to resume."""
    config = {
        k: asdict(v) if is_dataclass(v) else v
        for k, v in sorted(vars(args).items())
        if k not in NOT_RUN_CONFIG and not k.startswith("__")
    }
    config["requests_lines"] = [ln for ln in Path(args.requests).read_text().splitlines() if ln.strip()]
    return json.loads(json.dumps(config, default=str))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "request"


def _write_summary(out: Path, rows: list[dict], logger) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cols = ["index", "name", "status", "prompt", *SUMMARY_METRICS, "folder", "error"]
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok}/{len(rows)} requests edited; summary: {out / 'summary.csv'}")
    for r in rows:
        print(f"  {r['index']:>3} {r['status']:<7} {r.get('semantic_score', '')!s:<22} {r['name']} {r['error']}")
    if logger:
        logger.log_table("requests", columns=cols, data=[[r.get(c, "") for c in cols] for r in rows])


def console_main() -> None:
    """The `pbw-edit` console script: `main` without its return value (a console script exits with it)."""
    main()
