"""What an experiment run leaves to look at: results.md (tables with 95% intervals), image grids, a
static HTML gallery (original | mask | each variant, per request, with prompts and scores; relative
links to PNGs) and, when asked, a W&B run with one table per task and the summary metrics."""

from __future__ import annotations

import html
import math
from pathlib import Path

import torch
from torchvision.utils import save_image

from pbw.editing.figures import panel_grid
from pbw.editing.masks import mask_overlay
from pbw.editing.result import to01
from pbw.evaluation.oracle import PAINTED_MIN_SHARE

# Columns of a task's table, in this order when the rows have them.
COLUMNS = (
    "n",
    "failed",
    "both_parts_accuracy",
    "part1_accuracy",
    "part2_accuracy",
    "part3_accuracy",
    "oracle_accuracy",
    "region_accuracy",
    "caption_part_accuracy",
    "semantic_score",
    "realism",
    "fid",
    "kid",
    "preservation_l1",
    "preservation_psnr",
    "preservation_lpips",
    "change_inside",
    "change_outside",
    "seconds_per_edit",
    "seconds",
)
JUDGE_NOTES = {
    "color_oracle": (
        "oracle accuracy = the color the edit painted into the mask (the palette color whose share of the "
        f"masked pixels grew most, now at least {PAINTED_MIN_SHARE:.0%} of them) is the asked one, or the "
        "region was that color already and still is; region accuracy (stricter: any background in the "
        "mask counts) = the masked region's median color is the asked one"
    ),
    "part_oracle": (
        "both parts = every region's part has its asked color, part k = region k's part does (the color "
        "is the median where the part segmenter finds the part in the result; not found = a miss); "
        "change inside / outside = in / out of the union of the regions' masks"
    ),
    "caption_oracle": (
        "oracle = the body's color (median, where the part segmenter finds the body) is the caption's; "
        "caption part accuracy = share of the caption's five parts with the caption's color; \"before\" = "
        "the start images"
    ),
    "evaluator": (
        "evaluator accuracy = the evaluator CLIP (never seen by the optimization) ranks the asked prompt "
        "above the task's other prompts for the same region (up to 99), on the masked view (chance level: "
        'accuracy_chance in results.json); score = its cosine with the prompt; "before" = the unedited '
        "start images"
    ),
    "fid": "FID/KID against the real images (torchmetrics)",
    "preservation": (
        "preservation outside the mask: mean |change| (0..1), PSNR (dB, capped at 100) and LPIPS when configured"
    ),
    "change": "change = mean |pixel change| (0..1) inside / outside the mask",
}


def slug(name: str) -> str:
    """A file-name form of a task or variant name."""
    out = "".join(c if c.isalnum() else "_" for c in name.strip())
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_") or "x"


GRID_PER_ROW = 8  # requests side by side in a variant's grid
GRID_PANEL_SIDE = 96  # px a panel at least (the miniature's 64 px images upscaled)


def save_grid(path: Path, x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """The requests in blocks of `GRID_PER_ROW`, each block labelled rows: originals, (the mask, shown by
    dimming outside it), edited; columns numbered by request."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x0, x1 = to01(x0), to01(x1)
    shown = [("original", x0)] + ([("mask", x0 * (0.35 + 0.65 * mask.cpu()))] if mask is not None else [])
    shown.append(("edited", x1))
    rows, labels = [], []
    for start in range(0, len(x0), GRID_PER_ROW):
        end = min(start + GRID_PER_ROW, len(x0))
        for name, images in shown:
            rows.append(list(images[start:end]))
            labels.append(f"{start + 1}-{end} {name}" if name == "original" else name)
    picture = panel_grid(rows, [], labels, min_side=GRID_PANEL_SIDE)
    picture.save(path)


# ---- results.md -----------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return str(v)


def _cell(row: dict, column: str) -> str:
    v = row.get(column, "")
    for ci in (f"{column}_ci95", f"{column.split('_')[0]}_ci95"):
        if column.endswith(("accuracy", "recall")) and ci in row and isinstance(v, float) and v == v:
            lo, hi = row[ci]
            return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"
    return _fmt(v)


def _eval_cell(e: dict, key: str) -> str:
    v = e.get(key, float("nan"))
    if key == "accuracy" and v == v:
        lo, hi = e["accuracy_ci95"]
        return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"
    return _fmt(v)


def task_markdown(key: str, task: dict) -> list[str]:
    rows = task["rows"]
    lines = [f"## {task['title']}", ""]
    if task.get("settings"):
        lines += ["Settings of this task: " + ", ".join(f"{k} {v}" for k, v in task["settings"].items()) + ".", ""]
    notes = [JUDGE_NOTES[j] for j in task["judges"] if j in JUDGE_NOTES]
    if notes:
        lines += [
            "; ".join(notes) + ". [lo, hi] = 95% Wilson interval; realism = discriminator score (higher = "
            "more real); semantic_score = the optimizing CLIP's.",
            "",
        ]
    if not rows:
        return lines + ["(no rows)", ""]
    cols = [c for c in COLUMNS if any(c in r for r in rows.values()) and (c != "failed" or task.get("failed"))]
    evaluators = list(dict.fromkeys(n for r in rows.values() for n in r.get("evaluators", {})))
    before = list(dict.fromkeys(k for r in rows.values() for k in r.get("before", {}) if not k.endswith("ci95")))
    head = (
        cols[:1]
        + [f"{e}: accuracy" for e in evaluators]
        + [f"{e}: accuracy before" for e in evaluators]
        + [f"{e}: score" for e in evaluators]
        + cols[1:]
        + [f"before: {b}" for b in before]
    )
    lines += ["| variant | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, row in rows.items():
        ev = row.get("evaluators", {})
        cells = (
            [_cell(row, c) for c in cols[:1]]
            + [_eval_cell(ev.get(e, {}), "accuracy") for e in evaluators]
            + [_fmt(ev.get(e, {}).get("accuracy_before", float("nan"))) for e in evaluators]
            + [_eval_cell(ev.get(e, {}), "score") for e in evaluators]
            + [_cell(row, c) for c in cols[1:]]
            + [_cell(row.get("before", {}), b) for b in before]
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cats = list(dict.fromkeys(c for r in rows.values() for c in r.get("by_category", {})))
    if cats and evaluators:
        e = evaluators[0]
        lines += [
            "",
            f"By category: evaluator {e} accuracy [95% Wilson interval] (n).",
            "",
            "| variant | " + " | ".join(cats) + " |",
            "|---" * (len(cats) + 1) + "|",
        ]
        for name, row in rows.items():
            bc = row.get("by_category", {})
            cells = []
            for c in cats:
                x = bc.get(c, {}).get("evaluators", {}).get(e)
                cells.append(f"{_eval_cell(x, 'accuracy')} ({x['n']})" if x else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    prefs = [p for p in task.get("preferences", []) if "criterion" in p]
    if prefs:
        lines += [
            "",
            "Two-alternative preference, request by request (as the paper's human studies): A's share of the "
            "requests where the judge preferred one [95% Wilson interval]; ties (equal scores) are counted and "
            'left out of the share; "ties as half" counts each tie as half a win.',
            "",
            "| A | B | criterion (judge) | n | A wins | B wins | ties | A's share | ties as half |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in prefs:
            share = "nan" if p["share"] != p["share"] else f"{p['share']:.3f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]"
            lines.append(
                f"| {p['a']} | {p['b']} | {p['criterion']} ({p['judge']}) | {p['n']} | {p['a_wins']} | "
                f"{p['b_wins']} | {p['ties']} | {share} | {_fmt(p['share_ties_half'])} |"
            )
    for note in task.get("notes", []):
        lines.append(f"- {note}")
    if task.get("failed"):
        lines += [
            "",
            f"Failed requests ({len(task['failed'])}; n counts the requests every row of a generator "
            "finished, and the judges and preferences use those):",
            "",
        ]
        lines += [f"- {f['row']}: {f['request']}: {f['error']}" for f in task["failed"]]
    return lines + [""]


def results_markdown(results: dict) -> str:
    """The results tables (markdown), accuracies with their 95% Wilson intervals in brackets."""
    s = results["settings"]
    lines = [f"# {results['title']}", ""]
    if results.get("description"):
        lines += [results["description"].strip(), ""]
    lines += [
        f"Optimizing CLIP: `{results['clip']}`; evaluators: "
        + (", ".join(f"`{e}`" for e in results["evaluators"]) or "none")
        + f". Settings: optimizer {s['optimizer']}, {s['generations']} CMA-ES generations x {s['population']}, "
        f"{s['steps']} Adam steps at lr {s['lr'] if s['lr'] is not None else 'of each generator'}, {s['crops']} crops, lambda {s['lam']}, mask {s['mask_mode']}. "
        f"Device: {results['device']}.",
        "",
    ]
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    if results.get("notes"):
        lines.append("")
    for key, task in results["tasks"].items():
        lines += task_markdown(key, task)
    lines += [f"Total time: {results['seconds_total']:.0f} s. Gallery: gallery/index.html.", ""]
    return "\n".join(lines)


# ---- the HTML gallery -----------------------------------------------------------------------------------
class Gallery:
    """PNGs of every request's original, mask and edits under OUT/gallery/img, and OUT/gallery/index.html."""

    def __init__(self, out: Path):
        self.root = Path(out) / "gallery"
        self.saved: set[str] = set()

    def _save(self, rel: str, image: torch.Tensor) -> str:
        if rel not in self.saved:
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(image, path)
            self.saved.add(rel)
        return rel

    def add(
        self,
        task: str,
        gkey: str,
        variant: str,
        planned,
        x0: torch.Tensor,
        x1: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> dict:
        """Save one variant's images; returns their paths relative to the gallery folder."""
        base = f"img/{slug(task)}/{slug(gkey)}"
        names = [p.request.name for p in planned]
        out = {
            "generator": gkey,
            "original": [self._save(f"{base}/{n}_original.png", to01(x0[i])) for i, n in enumerate(names)],
            "mask": None,
            "edited": None,
        }
        if masks is not None:
            out["mask"] = [
                self._save(f"{base}/{n}_mask.png", to01(mask_overlay(x0[i : i + 1], masks[i : i + 1].to(x0))[0]))
                for i, n in enumerate(names)
            ]
        if x1 is not None:
            out["edited"] = [self._save(f"{base}/{n}__{slug(variant)}.png", to01(x1[i])) for i, n in enumerate(names)]
        return out

    def write(self, results: dict) -> Path:
        e = html.escape
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{e(results['title'])}</title>",
            "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:12px}"
            "img{width:160px;height:160px;image-rendering:pixelated;display:block}"
            ".s{color:#444;max-width:160px}</style></head><body>",
            f"<h1>{e(results['title'])}</h1>",
            f"<p>Optimizing CLIP <code>{e(results['clip'])}</code>; evaluators: "
            f"{e(', '.join(results['evaluators']) or 'none')}. Scores under each edit: opt = the optimizing CLIP's "
            "score, eval = the first evaluator's, D = the discriminator's realism, L1 = mean change outside the "
            "mask.</p>",
        ]
        for task in results["tasks"].values():
            parts.append(f"<h2>{e(task['title'])}</h2>")
            for gkey, requests in task["requests"].items():
                variants = [v for v, im in task["images"].items() if im["generator"] == gkey]
                if not variants:
                    continue
                first = task["images"][variants[0]]
                edited = [v for v in variants if task["images"][v]["edited"] is not None]
                head = ["request", "original"] + (["mask"] if first["mask"] else []) + edited
                parts.append(
                    f"<h3>generator: {e(gkey)}</h3><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                )
                for i, req in enumerate(requests):
                    desc = f"<b>{e(req['prompt'])}</b>"
                    for k in ("category", "region", "seed", "class"):
                        if req.get(k) is not None:
                            desc += f"<br>{k}: {e(str(req[k]))}"
                    cells = [
                        f"<td class='s'>{e(req['name'])}<br>{desc}</td>",
                        f"<td><img src='{first['original'][i]}'></td>",
                    ]
                    if first["mask"]:
                        cells.append(f"<td><img src='{first['mask'][i]}'></td>")
                    for v in edited:
                        pr = task["per_request"][v][i]
                        ev = [k for k in pr if k.startswith("evaluator:")]
                        score = f"opt {_fmt(pr.get('semantic_score'))}"
                        if ev:
                            score += f" · eval {_fmt(pr[ev[0]])}"
                        score += f" · D {_fmt(pr.get('realism'))}"
                        if "preservation_l1" in pr:
                            score += f" · L1 {_fmt(pr['preservation_l1'])}"
                        cells.append(
                            f"<td><img src='{task['images'][v]['edited'][i]}'><div class='s'>{e(score)}</div></td>"
                        )
                    parts.append("<tr>" + "".join(cells) + "</tr>")
                parts.append("</table>")
        parts.append("</body></html>")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "index.html"
        path.write_text("\n".join(parts), encoding="utf-8")
        return path


# ---- W&B --------------------------------------------------------------------------------------------------
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def log_wandb(results: dict, out: Path, project: str, name: str | None = None):
    """One W&B run: a Table per task (one row per request and generator: prompt, seed, original, mask,
    and per variant the edited image and every per-request score) and the rows' figures as summary
    metrics (`task/variant/metric`). Offline with WANDB_MODE=offline (sync later with `wandb sync`).
    Returns the summary metrics it set."""
    import wandb

    gallery = Path(out) / "gallery"
    run = wandb.init(
        project=project,
        name=name or results["experiment"],
        dir=str(out),
        config=results["config"],
        job_type="reproduce",
    )
    summary: dict[str, float] = {}
    for key, task in results["tasks"].items():
        for gkey, requests in task["requests"].items():
            variants = [v for v, im in task["images"].items() if im["generator"] == gkey]
            if not variants:
                continue
            metrics = list(dict.fromkeys(m for v in variants for pr in task["per_request"][v] for m in pr))
            first = task["images"][variants[0]]
            cols = ["request", "prompt", "category", "region", "seed", "class", "original", "mask"]
            for v in variants:
                if task["images"][v]["edited"] is not None:
                    cols.append(v)
                cols += [f"{v} | {m}" for m in metrics]
            table = wandb.Table(columns=cols)
            for i, req in enumerate(requests):
                row = [
                    req["name"],
                    req["prompt"],
                    req["category"],
                    req["region"],
                    req["seed"],
                    req["class"],
                    wandb.Image(str(gallery / first["original"][i])),
                    wandb.Image(str(gallery / first["mask"][i])) if first["mask"] else None,
                ]
                for v in variants:
                    if task["images"][v]["edited"] is not None:
                        row.append(wandb.Image(str(gallery / task["images"][v]["edited"][i])))
                    pr = task["per_request"][v][i]
                    row += [pr.get(m) for m in metrics]
                table.add_data(*row)
            suffix = "" if gkey == task["generator"] else f"_{gkey}"
            run.log({f"{key}/requests{suffix}": table})
        for v, row in task["rows"].items():
            for k, val in row.items():
                if _number(val):
                    summary[f"{key}/{v}/{k}"] = val
            for ev, d in row.get("evaluators", {}).items():
                for k, val in d.items():
                    if _number(val):
                        summary[f"{key}/{v}/evaluator {ev}/{k}"] = val
        for p in task.get("preferences", []):
            if "criterion" in p and _number(p["share"]):
                summary[f"{key}/preference/{p['a']} vs {p['b']}/{p['criterion']}"] = p["share"]
    run.summary.update(summary)
    run.finish()
    return summary
