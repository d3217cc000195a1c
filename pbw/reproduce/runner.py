"""The experiment runner: `run_experiment(experiment, out)` edits every task's requests with every
variant through the editing core (`pbw.editing.Editor`), judges them (`pbw.evaluation`) and writes
results.json, results.md, image grids, an HTML gallery and, when asked, W&B tables (`report`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pbw.assets import resolve_clip_spec, resolve_generator_path
from pbw.editing import EditFailure, Editor, EditResult
from pbw.editing.editor import resolve_device
from pbw.editing.losses import PreservationLoss
from pbw.editing.resume import claim, read_record, save_request, saved_requests, write_text_atomic
from pbw.evaluation.judges import (
    EvaluatorCLIP,
    accuracy,
    caption_oracle,
    caption_part_shares,
    change_inside_outside,
    check_independent,
    color_oracle,
    fid_kid,
    found_part_colors,
    load_real_images,
    preservation_outside,
)
from pbw.evaluation.preference import pairwise_preference
from pbw.models.maskable import MaskableGenerator
from pbw.reproduce import report
from pbw.reproduce.experiment import Experiment, ExperimentError, Task, Variant, validate
from pbw.reproduce.sources import (
    Planned,
    PromptItem,
    evaluator_candidates,
    load_prompts,
    plan_requests,
    resolve_class_ids,
)
from pbw.semantic import SemanticNet

NAN = float("nan")
GRID_COLUMNS = 64  # requests shown in a variant's grid (grids/); the gallery shows them all
SAVED = ("requests", "results.json", "results.md", "grids", "gallery")  # what --restart deletes


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else NAN


@dataclass
class _Batch:
    """One variant's images on one task: originals, edits (None: a reference row), masks, metrics."""

    x0: torch.Tensor | None
    x1: torch.Tensor | None
    masks: torch.Tensor
    metrics: list[dict]
    planned: list[Planned]
    per_request: list[dict] = field(default_factory=list)


class Runner:
    """One run of an experiment (see `run_experiment`)."""

    def __init__(
        self,
        exp: Experiment,
        out: str | Path,
        progress: bool = False,
        max_prompts: int | None = None,
        max_seeds: int | None = None,
        log: Callable[[str], None] = print,
        keep_going: bool = True,
        restart: bool = False,
    ):
        validate(exp)
        self.exp, self.out = exp, Path(out)
        self.progress, self.max_prompts, self.max_seeds, self.log = progress, max_prompts, max_seeds, log
        self.keep_going, self.restart = keep_going, restart
        self.notes: list[str] = []
        self.clip_spec = resolve_clip_spec(exp.clip)
        self.evaluator_specs = [resolve_clip_spec(s) for s in exp.evaluators]
        for spec in self.evaluator_specs:  # refuse the optimizing CLIP as its own judge, before loading anything
            warning = check_independent(self.clip_spec, spec, allow_same=exp.allow_same_evaluator)
            if warning:
                self.notes.append(warning)
        self.paths: dict[str, Path | None] = {}
        for key, spec in exp.generators.items():
            try:
                path = resolve_generator_path(spec.path)
                if not path.is_file():
                    raise FileNotFoundError(f"generator {key!r}: {path} does not exist")
            except FileNotFoundError as e:
                if not spec.optional:
                    raise FileNotFoundError(
                        f"{e}. Give its checkpoint: --generators.{key}.path FILE (any format "
                        "pbw.checkpoints.load_generator reads)"
                    ) from e
                self.notes.append(f"generator {key!r} is not available ({e}); its variants are left out")
                path = None
            self.paths[key] = path
        self.device = resolve_device(exp.device)
        self.editors: dict[tuple, Editor] = {}
        self.plans: dict[tuple[str, str], tuple[list[Planned], list[str]]] = {}
        self.originals: dict[tuple, dict[str, torch.Tensor]] = {}  # start images by editor and request name
        self.real_cache: dict[int, torch.Tensor] = {}
        self.synthetic_root: Path | None = None
        self.evaluators: list[EvaluatorCLIP] = []
        self.semantic: SemanticNet | None = None
        self.preservation: PreservationLoss | None = None

    # ---- models --------------------------------------------------------------------------------------
    def editor(self, key: str, overrides: dict) -> Editor:
        spec = self.exp.generators[key]
        kwargs = {**spec.overrides, **overrides}
        cache = (key, *sorted(kwargs.items()))
        if cache not in self.editors:
            from pbw.checkpoints import load_generator

            disc = Path(spec.discriminator).expanduser() if spec.discriminator else None
            if disc is not None and not disc.is_file():
                raise FileNotFoundError(
                    f"generator {key!r}: discriminator file {disc} does not exist "
                    f"(--generators.{key}.discriminator FILE, or null for no realism score)"
                )
            g = load_generator(self.paths[key], discriminator_file=disc, **kwargs)
            if not isinstance(g, MaskableGenerator):
                raise TypeError(f"{self.paths[key]} holds a {type(g).__name__}, not a generator pbw can edit")
            self.editors[cache] = Editor(
                g,
                self.semantic,
                self.preservation,
                self.device,
                info={"generator": str(self.paths[key]), "clip": self.clip_spec},
            )
        return self.editors[cache]

    def has_real(self) -> bool:
        r = self.exp.real
        return r is not None and (r.kind == "synthetic_birds" or r.path is not None)

    def real(self, resolution: int) -> torch.Tensor | None:
        r = self.exp.real
        if not self.has_real():
            return None
        if resolution not in self.real_cache:
            if r.kind == "synthetic_birds":
                base = self.real_cache.get(-1)
                if resolution != base.shape[-1]:
                    base = torch.nn.functional.interpolate(base, size=resolution, mode="area")
                self.real_cache[resolution] = base
            else:
                self.real_cache[resolution] = load_real_images(r.path, resolution, r.limit)
        return self.real_cache[resolution]

    def _prepare_data(self, items_needed: int) -> None:
        r = self.exp.real
        if r is None or r.kind != "synthetic_birds":
            return
        from pbw.data.synthetic import generate, load_split

        root = Path(r.path).expanduser() if r.path else self.out / "real_birds"
        if r.path is None or not root.exists():
            generate(root, n=max(2 * r.limit, 64, 8 * items_needed), resolution=32, seed=0, progress=False)
        self.synthetic_root = root
        self.real_cache[-1], _, _ = load_split(root, r.split, limit=r.limit)

    # ---- the run -------------------------------------------------------------------------------------
    def run(self, wandb_project: str | None = None) -> dict:
        exp = self.exp
        torch.set_grad_enabled(True)
        self.out.mkdir(parents=True, exist_ok=True)
        config = {**_jsonable(asdict(exp)), "max_prompts": self.max_prompts, "max_seeds": self.max_seeds}
        claim(self.out, json.loads(json.dumps(config)), self.restart, SAVED)
        t_start = time.time()
        caption_need = max(
            [
                t.prompts.first + (t.prompts.count or 0)
                for t in exp.tasks.values()
                if t.prompts.captions == "synthetic_birds"
            ]
            or [0]
        )
        self._prepare_data(caption_need)
        items = {key: load_prompts(t.prompts, self.synthetic_root, self.max_prompts) for key, t in exp.tasks.items()}
        self.semantic = SemanticNet.from_spec(
            self.clip_spec, crops=exp.settings.crops, view=exp.view, cache_dir=exp.clip_cache_dir
        )
        self.preservation = PreservationLoss(exp.lpips, exp.lpips_net, exp.lpips_weights)
        for raw, spec in zip(exp.evaluators, self.evaluator_specs, strict=True):
            ev = EvaluatorCLIP(spec, view=exp.view, device=self.device, name=raw, cache_dir=exp.clip_cache_dir)
            warning = check_independent(self.clip_spec, spec, self.semantic, ev.net, exp.allow_same_evaluator)
            if warning:
                self.notes.append(warning)
            self.evaluators.append(ev)
        lpips_judge = self.preservation.lpips
        if lpips_judge is None and exp.lpips_weights is not None:
            from pbw.editing import build_lpips

            lpips_judge = build_lpips(exp.lpips_net, exp.lpips_weights)
        self.lpips_judge = lpips_judge
        results = {
            "experiment": exp.name,
            "title": exp.title or exp.name,
            "description": exp.description,
            "clip": exp.clip,
            "evaluators": list(exp.evaluators),
            "device": str(self.device),
            "settings": asdict(exp.settings),
            "config": _jsonable(asdict(exp)),
            "notes": self.notes,
            "tasks": {},
        }
        gallery = report.Gallery(self.out)
        for key, task in exp.tasks.items():
            results["tasks"][key] = self._run_task(key, task, items[key], gallery)
        results["seconds_total"] = time.time() - t_start
        results["failed"] = sum(len(t["failed"]) for t in results["tasks"].values())
        write_text_atomic(self.out / "results.json", json.dumps(results, indent=2))
        write_text_atomic(self.out / "results.md", report.results_markdown(results))
        gallery.write(results)
        if wandb_project:
            report.log_wandb(results, self.out, wandb_project)
        return results

    def _plan(self, key: str, task: Task, items: list[PromptItem], gkey: str, g: MaskableGenerator):
        if (key, gkey) not in self.plans:
            spec = self.exp.generators[gkey]
            class_ids = resolve_class_ids(task.classes, spec.class_names)
            row_masks = {
                v.name: v.masks
                for v in task.variants
                if v.masks is not None and (v.generator or task.generator) == gkey
            }
            self.plans[(key, gkey)] = plan_requests(
                task, items, g, class_ids, self.max_seeds, row_masks, keep_going=self.keep_going
            )
        return self.plans[(key, gkey)]

    def _run_task(self, key: str, task: Task, items: list[PromptItem], gallery: report.Gallery) -> dict:
        masked = task.masks is not None or task.regions is not None
        out = {
            "title": task.title or key,
            "kind": "masked edit" if masked else "text to image",
            "generator": task.generator,
            "judges": list(task.judges),
            "settings": dict(task.settings),
            "requests": {},
            "rows": {},
            "per_request": {},
            "images": {},
            "preferences": [],
            "failed": [],
            "notes": [],
        }
        # first every row's edits (each saved as it finishes; a rerun skips the saved ones) ...
        rows: list[tuple[Variant, str, Editor, list[Planned]]] = []
        for variant in task.variants:
            gkey = variant.generator or task.generator
            if self.paths[gkey] is None:
                out["notes"].append(f"variant {variant.name!r} left out: generator {gkey!r} is not available")
                continue
            editor = self.editor(gkey, variant.generator_overrides)
            planned, notes = self._plan(key, task, items, gkey, editor.generator)
            if gkey not in out["requests"]:
                out["requests"][gkey] = []
                out["notes"].extend(notes)
            if variant.edit:
                self._edit_row(key, task, variant, editor, planned)
            rows.append((variant, gkey, editor, planned))
        # ... then the judges, on the requests that every row of a generator finished
        errors = {v.name: self._errors(key, v, planned) for v, _, _, planned in rows}
        for variant, _, _, planned in rows:
            for p, error in zip(planned, errors[variant.name], strict=True):
                if error is not None:
                    out["failed"].append({"row": variant.name, "request": p.request.name, "error": error})
        batches: dict[str, tuple[str, _Batch]] = {}
        for variant, gkey, editor, planned in rows:
            same = [v.name for v, g, _, _ in rows if g == gkey]
            common = [i for i in range(len(planned)) if all(errors[n][i] is None for n in same)]
            if not out["requests"][gkey]:
                out["requests"][gkey] = [planned[i].describe() for i in common]
            kept = [planned[i] for i in common]
            saved = self._load(key, variant, kept) if variant.edit else None
            row, batch = self._variant_row(task, variant, editor, kept, saved, masked)
            row["failed"] = sum(e is not None for e in errors[variant.name])
            out["rows"][variant.name] = row
            out["per_request"][variant.name] = batch.per_request
            batches[variant.name] = (gkey, batch)
            out["images"][variant.name] = (
                gallery.add(key, gkey, variant.name, kept, batch.x0, batch.x1, batch.masks if masked else None)
                if kept
                else {"generator": gkey, "original": [], "mask": None, "edited": None}
            )
            if batch.x1 is not None:  # the first GRID_COLUMNS requests
                k = GRID_COLUMNS
                report.save_grid(
                    self.out / "grids" / f"{report.slug(key)}__{report.slug(variant.name)}.png",
                    batch.x0[:k],
                    batch.x1[:k],
                    batch.masks[:k] if masked else None,
                )
            batch.x0 = batch.x1 = batch.masks = None  # saved; the preferences need only the scores
        out["preferences"] = self._preferences(task, batches)
        if "fid" in task.judges and not self.has_real():
            out["notes"].append(
                "FID/KID left out: no real images were given (real.path: a folder of the domain's images)"
            )
        return out

    def _folders(self, key: str, variant: Variant, planned: list[Planned]) -> list[Path]:
        """Where a row's requests are saved: OUT/requests/<task>/<row>/<request>."""
        row = self.out / "requests" / report.slug(key) / report.slug(variant.name)
        return [row / p.request.name for p in planned]

    def _edit_row(self, key: str, task: Task, variant: Variant, editor: Editor, planned: list[Planned]) -> None:
        """Edit a row's requests that are not saved yet, saving each group as it finishes."""
        folders = self._folders(key, variant, planned)
        ok = [i for i, p in enumerate(planned) if p.error is None]
        saved = saved_requests(folders)
        done = {j for j, i in enumerate(ok) if i in saved}
        count, failed, clock = len(done), 0, time.time()
        where = f"[{key}] {variant.name}"
        self.log(f"{where}: {len(ok)} request(s) on {variant.generator or task.generator}, {len(done)} resumed")

        def save(indices: list[int], results: list) -> None:  # as each group of requests finishes
            nonlocal count, failed, clock
            now = time.time()
            seconds, clock = (now - clock) / len(indices), now
            unit = [folders[ok[j]].name for j in indices]
            for j, r in zip(indices, results, strict=True):
                save_request(folders[ok[j]], r, unit, seconds=seconds)
            count += len(indices)
            failed += sum(isinstance(r, EditFailure) for r in results)
            more = f", {failed} failed" if failed else ""
            self.log(f"{where}: {count} of {len(ok)} done, {len(done)} resumed{more}")

        if len(done) < len(ok):
            settings = replace(self.exp.settings, **{**task.settings, **variant.settings})
            requests = [planned[i].request_for(variant.name) for i in ok]
            if task.regions and variant.regions == "merged":  # the task's prompt over the union of the masks
                requests = [
                    replace(r, regions=[], prompt=planned[i].item.prompt_set(), mask=r.union_mask)
                    for r, i in zip(requests, ok, strict=True)
                ]
            if task.regions and variant.regions == "sequential":
                todo = [j for j in range(len(ok)) if j not in done]
                save(todo, self._sequential(editor, [requests[j] for j in todo], settings))
            else:
                editor.run(
                    requests, settings, keep_going=self.keep_going, progress=self.progress, done=done, on_batch_end=save
                )

    def _sequential(self, editor: Editor, requests: list, settings) -> list[EditResult | EditFailure]:
        """Each request's regions edited one after another, each from the last one's result; a result
        keeps the request's start image as its original and the union of the regions as its mask."""
        results: list = list(requests)
        starts: list = [None] * len(requests)
        for k in range(len(requests[0].regions)):
            live = [i for i, r in enumerate(results) if not isinstance(r, EditFailure)]
            steps = [
                replace(requests[i], regions=[], prompt=requests[i].regions[k].prompt, mask=requests[i].regions[k].mask)
                if k == 0
                else replace(
                    requests[i],
                    regions=[],
                    prompt=requests[i].regions[k].prompt,
                    mask=requests[i].regions[k].mask,
                    codes=None,
                    base=results[i],
                )
                for i in live
            ]
            for i, r in zip(
                live, editor.run(steps, settings, keep_going=self.keep_going, progress=self.progress), strict=True
            ):
                results[i] = r
                if k == 0 and isinstance(r, EditResult):
                    starts[i] = r.original
        for r, req, start in zip(results, requests, starts, strict=True):
            if isinstance(r, EditResult):
                r.original, r.mask = start, req.union_mask
        return results

    def _errors(self, key: str, variant: Variant, planned: list[Planned]) -> list[str | None]:
        """Per request of a row: why it failed, or None (edited and saved, or a row that does not edit)."""
        out: list[str | None] = []
        for p, folder in zip(planned, self._folders(key, variant, planned), strict=True):
            if p.error is not None or not variant.edit:
                out.append(p.error)
            else:
                record = read_record(folder)
                out.append("not edited" if record is None else record.get("error"))
        return out

    def _load(self, key: str, variant: Variant, planned: list[Planned]) -> list[tuple[EditResult, float]]:
        """A row's saved results of `planned` and the seconds each took to edit."""
        folders = self._folders(key, variant, planned)
        return [(EditResult.load(f), float(read_record(f).get("seconds", NAN))) for f in folders]

    def _variant_row(
        self,
        task: Task,
        variant: Variant,
        editor: Editor,
        planned: list[Planned],
        saved: list[tuple[EditResult, float]] | None,
        masked: bool,
    ) -> tuple[dict, _Batch]:
        """A row's scores and judges on `planned` (the requests every row of its generator finished), from
        its `saved` results (None: a reference row of unedited start images)."""
        t0 = time.time()
        g = editor.generator
        ekey = next(k for k, e in self.editors.items() if e is editor)
        requests = [p.request_for(variant.name) for p in planned]
        res = g.resolution
        if not planned:
            return {"kind": "no edit" if saved is None else _kind(masked), "n": 0}, _Batch(None, None, None, [], [])
        if saved is not None:
            results = [r for r, _ in saved]
            settings = replace(self.exp.settings, **{**task.settings, **variant.settings})
            masks = torch.cat([r.mask if r.mask is not None else torch.ones(1, 1, res, res) for r in results])
            x0, x1 = torch.cat([r.original for r in results]), torch.cat([r.edited for r in results])
            metrics = [r.metrics for r in results]
            self.originals.setdefault(ekey, {}).update(
                {p.request.name: r.original for p, r in zip(planned, results, strict=True)}
            )
            edit_seconds = float(sum(t for _, t in saved))
            row = {
                "kind": _kind(masked),
                "n": len(requests),
                "space": g.space(settings.space, masked),
                "semantic_score": float(np.mean([m["semantic_score"] for m in metrics])),
                "realism": float(np.mean([m.get("realism", NAN) for m in metrics])),
            }
        else:
            known = self.originals.get(ekey, {})
            x0 = torch.cat([known[r.name] if r.name in known else editor.start(r.codes).original for r in requests])
            masks = torch.cat([r.union_mask if r.masked else torch.ones(1, 1, res, res) for r in requests])
            x1, metrics, edit_seconds = None, [{} for _ in requests], 0.0
            row = {
                "kind": "no edit",
                "n": len(requests),
                "semantic_score": NAN,
                "realism": _realism_mean(g, x0, requests),
            }
        batch = _Batch(x0, x1, masks, metrics, planned)
        batch.per_request = [
            {"semantic_score": m.get("semantic_score", NAN), "realism": m.get("realism", NAN)} for m in metrics
        ]
        if saved is not None:  # what the edit itself noted (e.g. split after running out of memory)
            for pr, req, (r, _) in zip(batch.per_request, requests, saved, strict=True):
                extra = [n for n in r.notes if n not in req.notes]
                if extra:
                    pr["notes"] = "; ".join(extra)
        if x1 is None:
            r0 = _realism(g, x0, requests)
            for i, pr in enumerate(batch.per_request):
                pr["realism"] = r0[i]
        self._judge(task, row, batch, g, masked)
        if x1 is not None and not masked:  # the start images of a generation, for comparison
            row.setdefault("before", {})["realism"] = _realism_mean(g, x0, requests)
        row["seconds"] = edit_seconds + time.time() - t0 if variant.edit else 0.0
        if variant.edit:
            row["seconds_per_edit"] = edit_seconds / max(len(requests), 1)
        self._by_category(row, batch)
        return row, batch

    def _judge(self, task: Task, row: dict, batch: _Batch, g: MaskableGenerator, masked: bool) -> None:
        x0, x1, masks = batch.x0, batch.x1, batch.masks
        shown = x0 if x1 is None else x1
        for judge in task.judges:
            if judge == "fid":
                real = self.real(g.resolution)
                if real is not None:
                    row.update(
                        fid_kid(real, shown, self.exp.real.features, self.exp.real.kid_subset_size, device=self.device)
                    )
            elif judge == "change" and masked:
                inside, outside = (0.0, 0.0) if x1 is None else change_inside_outside(x0, x1, masks)
                row.update(change_inside=inside, change_outside=outside)
            elif judge == "preservation" and masked:
                pres = preservation_outside(x0, shown, masks, self.lpips_judge)
                for k, values in pres.items():
                    row[k] = _mean(values)
                    for pr, v in zip(batch.per_request, values, strict=True):
                        pr[k] = v
            elif judge == "color_oracle":
                asked = [p.item.meta.get("color") for p in batch.planned]
                if None in asked:
                    raise ExperimentError("judge color_oracle needs prompts from a template with a {color} value")
                row.update(color_oracle(x0, x1, masks, asked))
            elif judge == "part_oracle":
                self._part_oracle(task, row, batch)
            elif judge == "caption_oracle":
                colors = [p.item.meta.get("part_colors") for p in batch.planned]
                if None in colors:
                    raise ExperimentError("judge caption_oracle needs captions: synthetic_birds")
                row.update(caption_oracle(shown, colors))
                shares = caption_part_shares(found_part_colors(shown), colors)
                for pr, share in zip(batch.per_request, shares, strict=True):
                    pr["oracle"] = share
                if x1 is not None:
                    before = caption_oracle(x0, colors)
                    row.setdefault("before", {}).update(
                        oracle_accuracy=before["oracle_accuracy"],
                        oracle_ci95=before["oracle_ci95"],
                        caption_part_accuracy=before["caption_part_accuracy"],
                    )
            elif judge == "evaluator":
                self._evaluate(row, batch, masked)

    def _part_oracle(self, task: Task, row: dict, batch: _Batch) -> None:
        """Each region's asked color against the color the oracle reads where the part segmenter finds
        the region's part in the result (a part not found is a miss): `both_parts_accuracy` (every
        region right; named so for two), `part{k}_accuracy`; "before" = the start images."""
        parts = [(r.masks.part, r.color) for r in task.regions]
        for key, images in (("", batch.x1), ("before", batch.x0)):
            if images is None:
                continue
            found = found_part_colors(images)
            hits = [
                [f.get(part) == p.item.meta[color] for part, color in parts]
                for f, p in zip(found, batch.planned, strict=True)
            ]
            out = {"both_parts_accuracy": [all(h) for h in hits]}
            out.update({f"part{k + 1}_accuracy": [h[k] for h in hits] for k in range(len(parts))})
            dest = row if not key else row.setdefault("before", {})
            for name, values in out.items():
                acc = accuracy(values)
                dest[name], dest[f"{name}_ci95"] = acc["value"], acc["ci95"]
            if not key:
                for pr, h in zip(batch.per_request, hits, strict=True):
                    pr["parts_right"] = float(sum(h))

    def _evaluate(self, row: dict, batch: _Batch, masked: bool) -> None:
        catalog, cands = evaluator_candidates(batch.planned)
        view_masks = batch.masks if masked else None
        chance = _mean(1 / len(c) for c in cands if len(c) > 1)  # a blind guess among the candidates
        row["evaluators"] = {}
        for ev in self.evaluators:
            s0, h0 = ev.judge(batch.x0, view_masks, cands, catalog)
            s1, h1 = (s0, h0) if batch.x1 is None else ev.judge(batch.x1, view_masks, cands, catalog)
            hits, hits0 = [h for h in h1 if h is not None], [h for h in h0 if h is not None]
            acc, acc0 = accuracy(hits), accuracy(hits0)
            row["evaluators"][ev.name] = {
                "score": _mean(s1),
                "score_before": _mean(s0),
                "accuracy": acc["value"],
                "accuracy_ci95": acc["ci95"],
                "accuracy_before": acc0["value"],
                "accuracy_chance": chance,
                "n": acc["n"],
            }
            for pr, s, h in zip(batch.per_request, s1, h1, strict=True):
                pr[f"evaluator:{ev.name}"] = s
                pr[f"evaluator_hit:{ev.name}"] = h

    def _by_category(self, row: dict, batch: _Batch) -> None:
        cats = [p.item.category for p in batch.planned]
        if not any(c is not None for c in cats):
            return
        row["by_category"] = {}
        for cat in dict.fromkeys(c for c in cats if c is not None):
            idx = [i for i, c in enumerate(cats) if c == cat]
            prs = [batch.per_request[i] for i in idx]
            entry = {
                "n": len(idx),
                "semantic_score": _mean(pr["semantic_score"] for pr in prs),
                "realism": _mean(pr["realism"] for pr in prs),
            }
            for ev in self.evaluators:
                hits = [pr.get(f"evaluator_hit:{ev.name}") for pr in prs]
                hits = [h for h in hits if h is not None]
                if f"evaluator:{ev.name}" in prs[0]:
                    acc = accuracy(hits)
                    entry.setdefault("evaluators", {})[ev.name] = {
                        "score": _mean(pr[f"evaluator:{ev.name}"] for pr in prs),
                        "accuracy": acc["value"],
                        "accuracy_ci95": acc["ci95"],
                        "n": acc["n"],
                    }
            if "preservation_l1" in prs[0]:
                entry["preservation_l1"] = _mean(pr["preservation_l1"] for pr in prs)
            row["by_category"][cat] = entry

    def _preferences(self, task: Task, batches: dict[str, tuple[str, _Batch]]) -> list[dict]:
        """Two-alternative preferences between variants on the same requests: by the pixel oracle (text to
        image: the share of the caption's part colors right), the first evaluator's score (accuracy) and
        the discriminator (realism)."""
        edited = [v.name for v in task.variants if v.edit and v.name in batches]
        if task.preferences is not None:
            pairs = [tuple(p) for p in task.preferences if p[0] in batches and p[1] in batches]
        else:
            pairs = [(edited[0], b) for b in edited[1:] if batches[b][0] == batches[edited[0]][0]] if edited else []
        prefs = []
        criteria = [("realism", "realism", "discriminator score")]
        if "caption_oracle" in task.judges:
            criteria.insert(0, ("oracle", "oracle", "pixel oracle: share of the caption's part colors right"))
        if "part_oracle" in task.judges:
            criteria.insert(0, ("oracle", "parts_right", "pixel oracle: regions whose part has the asked color"))
        if self.evaluators and "evaluator" in task.judges:
            ev = self.evaluators[0].name
            criteria.insert(0, ("accuracy", f"evaluator:{ev}", f"evaluator CLIP {ev} score"))
        for a, b in pairs:
            (ga, ba), (gb, bb) = batches[a], batches[b]
            if ga != gb:
                prefs.append(
                    {
                        "a": a,
                        "b": b,
                        "note": f"not compared: different generators ({ga} vs {gb}), so different start images",
                    }
                )
                continue
            for criterion, field_, judge in criteria:
                sa = [pr.get(field_, NAN) for pr in ba.per_request]
                sb = [pr.get(field_, NAN) for pr in bb.per_request]
                if all(v != v for v in sa) or all(v != v for v in sb):
                    continue
                pref = pairwise_preference(sa, sb, tie_tolerance=task.tie_tolerance)
                prefs.append({"a": a, "b": b, "criterion": criterion, "judge": judge, **pref.as_dict()})
        return prefs


def _kind(masked: bool) -> str:
    """A task's or row's kind of edit."""
    return "masked edit" if masked else "text to image"


def _realism(g: MaskableGenerator, images: torch.Tensor, requests) -> list[float]:
    codes = {k: torch.cat([r.codes[k] for r in requests]) for k in requests[0].codes}
    with torch.no_grad():
        r = g.realism(images.to(next(g.parameters()).device), codes)
    return [NAN] * len(images) if r is None else [float(v) for v in r.cpu()]


def _realism_mean(g: MaskableGenerator, images: torch.Tensor, requests) -> float:
    codes = {k: torch.cat([r.codes[k] for r in requests]) for k in requests[0].codes}
    with torch.no_grad():
        r = g.realism(images.to(next(g.parameters()).device), codes)
    return NAN if r is None else float(r.mean())


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def run_experiment(
    exp: Experiment,
    out: str | Path,
    wandb_project: str | None = None,
    progress: bool = False,
    max_prompts: int | None = None,
    max_seeds: int | None = None,
    log: Callable[[str], None] = print,
    keep_going: bool = True,
    restart: bool = False,
) -> dict:
    """Run `exp`, writing results.json, results.md, grids/, gallery/index.html (and W&B tables with
    `wandb_project`) to `out`; returns the results. `max_prompts`/`max_seeds` cut every task down
    (smoke runs). Config errors and an evaluator identical to the optimizing CLIP are refused before
    any model is loaded.

    Each finished request is saved under OUT/requests as it finishes; rerun with the same `out` to
    resume (a folder of another configuration is refused unless `restart`, which starts over). A request
    that fails is recorded (`results["failed"]` counts them; each task lists them) and the others go
    on; `keep_going=False` raises at the first failure instead."""
    return Runner(exp, out, progress, max_prompts, max_seeds, log, keep_going, restart).run(wandb_project)
