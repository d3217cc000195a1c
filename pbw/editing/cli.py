"""`edit.py`: paint by word from the command line (jsonargparse; `--config configs/edit/NAME.yaml`)."""
from __future__ import annotations

import csv
import json
import logging
import traceback
from dataclasses import asdict
from pathlib import Path

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from torchvision.utils import save_image

from pbw.editing.losses import PreservationLoss
from pbw.editing.masks import load_mask, mask_overlay
from pbw.editing.module import MASK_MODES, OPTIMIZERS, EditModule, EditRequest, EditSettings, run_edit
from pbw.models.maskable import MaskableGenerator
from pbw.semantic import PromptSet, SemanticNet

log = logging.getLogger(__name__)
REQUEST_KEYS = {"prompt", "negative", "mask", "seed", "class", "name", "feather"}
SUMMARY_METRICS = ("semantic_score", "realism", "preservation_l1", "preservation_lpips", "loss")


def build_parser() -> ArgumentParser:
    """The edit.py argument parser; every option can also come from a YAML `--config`."""
    p = ArgumentParser(prog="edit.py", description="Edit a generated image with words inside a mask (Paint by Word).")
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of these options")
    p.add_argument("--generator", type=str, required=True, help="generator checkpoint (pbw or published format)")
    p.add_argument("--prompt", type=str | None, default=None,
                   help="text, or weighted terms 'a red head::2 | a crown::1'")
    p.add_argument("--negative", type=str | None, default=None, help="negative prompt(s), '|'-separated")
    p.add_argument("--mask", type=str | None, default=None,
                   help="PNG/JPEG (white = edit), .npy, or rectangle 'x0,y0,x1,y1' (pixels or 0..1); none: whole image")
    p.add_argument("--feather", type=float, default=0.0, help="soften the mask edge by this many pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting image")
    p.add_argument("--class", dest="class_", type=int | None, default=None, help="class label (BigGAN)")
    p.add_argument("--out", type=str, default="edit_out", help="output folder")
    p.add_argument("--requests", type=str | None, default=None,
                   help="JSONL file, one request per line with keys " + ", ".join(sorted(REQUEST_KEYS)))
    p.add_argument("--batch_size", type=int, default=4, help="requests optimized together")
    p.add_argument("--clip", type=str, default="ViT-B-32:openai",
                   help="NAME[:TAG|:FILE|:random] or hf-hub:ORG/REPO or local-dir:PATH")
    p.add_argument("--clip_cache_dir", type=str | None, default=None)
    p.add_argument("--crops", type=int, default=32, help="random crops per image seen by CLIP")
    p.add_argument("--view", type=str, default="paste_onto_blank", help="paste_onto_blank | zoom")
    p.add_argument("--optimizer", type=str, default="cma+adam", help=" | ".join(OPTIMIZERS))
    p.add_argument("--steps", type=int, default=100, help="Adam steps")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--sigma0", type=float, default=0.5)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--population_chunk", type=int | None, default=None)
    p.add_argument("--lam", type=float, default=5.0, help="weight of the preservation loss")
    p.add_argument("--mask_mode", type=str, default="latent", help=" | ".join(MASK_MODES))
    p.add_argument("--lpips", type=bool, default=True, help="use LPIPS in the preservation loss")
    p.add_argument("--lpips_net", type=str, default="alex")
    p.add_argument("--lpips_weights", type=str | None, default=None,
                   help="local torchvision backbone weights for LPIPS (offline)")
    p.add_argument("--device", type=str, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--wandb_project", type=str | None, default=None, help="log to this W&B project")
    p.add_argument("--wandb_name", type=str | None, default=None)
    p.add_argument("--progress", type=bool, default=True)
    return p


def load_maskable(path: str, device: torch.device) -> MaskableGenerator:
    """The maskable generator in checkpoint `path`, or an error naming what was found."""
    from pbw.checkpoints import load_generator

    g = load_generator(path)
    if not isinstance(g, MaskableGenerator):
        raise TypeError(f"{path} holds a {type(g).__name__}, not a generator pbw can edit (a MaskableGenerator)")
    return g.to(device).eval()


def _request(g: MaskableGenerator, spec: dict, defaults, device) -> EditRequest:
    unknown = set(spec) - REQUEST_KEYS
    if unknown:
        raise ValueError(f"unknown request keys {sorted(unknown)}; allowed: {sorted(REQUEST_KEYS)}")
    prompt = spec.get("prompt", defaults.prompt)
    if not prompt:
        raise ValueError("no prompt: give --prompt or a 'prompt' in the request")
    cls = spec.get("class", defaults.class_)
    codes = g.sample(1, seed=int(spec.get("seed", defaults.seed)), **({"classes": cls} if cls is not None else {}))
    codes = {k: v.to(device) for k, v in codes.items()}
    mask_spec, notes = spec.get("mask", defaults.mask), []
    mask = None
    if mask_spec is not None:
        mask, notes = load_mask(mask_spec, g.resolution, float(spec.get("feather", defaults.feather)))
    return EditRequest(codes, PromptSet.parse(prompt, spec.get("negative", defaults.negative)), mask,
                       str(spec.get("name", "")), notes)


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().float().clamp(-1, 1) + 1) / 2).cpu()


def write_outputs(folder: Path, module: EditModule, i: int, metrics: dict, settings: dict,
                  request: EditRequest) -> None:
    """original.png, edited.png, mask.png, comparison.png, metrics.json, latents.pt for request i."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        edited = module.render()[i:i + 1]
    x0, mask = module.x0[i:i + 1], module.mask[i:i + 1]
    save_image(_to01(x0), folder / "original.png")
    save_image(_to01(edited), folder / "edited.png")
    save_image(mask.detach().cpu(), folder / "mask.png")
    save_image(torch.cat([_to01(x0), _to01(mask_overlay(x0, mask)), _to01(edited)]), folder / "comparison.png",
               nrow=3, padding=2)
    out = {"name": request.name, "prompt": request.prompt.texts, "prompt_weights": request.prompt.weights,
           "metrics": metrics, "notes": request.notes, "settings": settings,
           "history": module.metrics_history}
    (folder / "metrics.json").write_text(json.dumps(out, indent=2))
    torch.save({"codes": {k: v[i:i + 1].cpu() for k, v in module.codes.items()},
                "w0": module.w0[i:i + 1].cpu(),
                "latents": {k: v[i:i + 1].detach().cpu() for k, v in module.latents.items()},
                "mask": mask.cpu()}, folder / "latents.pt")


def main(argv: list[str] | None = None) -> list[dict]:
    """Run edit.py; returns the summary rows (one per request)."""
    args = build_parser().parse_args(argv)
    if args.prompt is None and args.requests is None:
        raise SystemExit("edit.py: give --prompt (with --mask for a masked edit) or --requests FILE.jsonl")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    settings = EditSettings(optimizer=args.optimizer, steps=args.steps, lr=args.lr, population=args.population,
                            sigma0=args.sigma0, generations=args.generations, lam=args.lam,
                            mask_mode=args.mask_mode, population_chunk=args.population_chunk, seed=args.seed)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (cuDNN convs already use TF32)
    g = load_maskable(args.generator, device)
    semantic = SemanticNet.from_spec(args.clip, crops=args.crops, view=args.view,
                                     cache_dir=args.clip_cache_dir).to(device)
    preservation = PreservationLoss(args.lpips, args.lpips_net, args.lpips_weights).to(device)
    logger = False
    if args.wandb_project:
        from pytorch_lightning.loggers import WandbLogger
        logger = WandbLogger(project=args.wandb_project, name=args.wandb_name, save_dir=args.out)
    all_settings = {**asdict(settings), "clip": args.clip, "crops": args.crops, "view": args.view,
                    "lpips": args.lpips, "lpips_net": args.lpips_net, "generator": args.generator,
                    "device": str(device)}

    out = Path(args.out)
    if args.requests:
        lines = [ln for ln in Path(args.requests).read_text().splitlines() if ln.strip()]
        specs = []
        for ln in lines:
            try:
                specs.append(json.loads(ln))
            except json.JSONDecodeError as e:
                specs.append(e)
    else:
        specs = [{}]
    rows: list[dict] = []
    ready: list[tuple[int, EditRequest]] = []
    for idx, spec in enumerate(specs):
        row = {"index": idx, "name": "", "status": "ok", "error": "", "folder": ""}
        rows.append(row)
        try:
            if isinstance(spec, Exception):
                raise ValueError(f"line {idx + 1} of {args.requests} is not JSON: {spec}")
            req = _request(g, spec, args, device)
            req.name = req.name or (f"{idx:03d}" if args.requests else "edit")
            row["name"], row["prompt"] = req.name, " | ".join(req.prompt.texts)
            ready.append((idx, req))
        except Exception as e:
            if not args.requests:
                raise
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
    # batches of requests of the same kind (masked or whole image)
    batches, cur = [], []
    for item in ready:
        if cur and (len(cur) == args.batch_size or (cur[0][1].mask is None) != (item[1].mask is None)):
            batches.append(cur)
            cur = []
        cur.append(item)
    if cur:
        batches.append(cur)
    for batch in batches:
        _run_batch(batch, g, semantic, preservation, settings, all_settings, rows, out, args, device, logger)
    if args.requests:
        _write_summary(out, rows, logger)
    return rows


def _run_batch(batch, g, semantic, preservation, settings, all_settings, rows, out, args, device, logger):
    try:
        module = EditModule(g, semantic, [r for _, r in batch], settings, preservation)
        run_edit(module, "gpu" if device.type == "cuda" else "cpu", logger, args.progress)
        metrics = module.final_metrics()
        for i, (idx, req) in enumerate(batch):
            folder = out / f"{idx:03d}_{_safe(req.name)}" if args.requests else out
            write_outputs(folder, module, i, metrics[i], all_settings, req)
            rows[idx].update(folder=str(folder), **{k: metrics[i].get(k, "") for k in SUMMARY_METRICS})
    except Exception as e:
        if not args.requests:
            raise
        if len(batch) > 1:  # find which request fails; the others still run
            for item in batch:
                _run_batch([item], g, semantic, preservation, settings, all_settings, rows, out, args, device, logger)
            return
        log.error("request %s failed:\n%s", batch[0][0], traceback.format_exc())
        rows[batch[0][0]].update(status="failed", error=f"{type(e).__name__}: {e}")


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

