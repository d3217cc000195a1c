"""What an experiment's tasks read: prompt sets (literal, templates, YAML/text files, captions), masks
(boxes, files, a segmentation callable the user names, bird parts), class names, and the requests
built from them for one generator."""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pbw.configs import config_path
from pbw.editing import EditRequest, Region
from pbw.editing.editor import one_line
from pbw.editing.masks import PART_PREFIX, MaskError, is_part_spec, load_mask
from pbw.models.maskable import MaskableGenerator
from pbw.reproduce.experiment import ExperimentError, Masks, Prompts, Task
from pbw.semantic import PromptSet

PROMPT_KEYS = {"text", "category", "region", "negative"}


@dataclass
class PromptItem:
    """One prompt of a task: the text (`PromptSet.parse` syntax), its category and the region its mask
    covers (from a prompt file), a negative prompt, and `meta` for judges (template values, the
    synthetic birds' part colors)."""

    text: str
    category: str | None = None
    region: str | None = None
    negative: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt_set(self) -> PromptSet:
        return PromptSet.parse(self.text, self.negative)


@dataclass
class Planned:
    """A request of a task on one generator, and what the report says about it. `row_masks`: the mask
    and its notes for each row (variant name) with masks of its own. `error`: why the request could not
    be made (e.g. an unreadable mask file); every row lists it as failed."""

    request: EditRequest
    item: PromptItem
    seed: int
    cls: int | None
    index: int
    row_masks: dict[str, tuple[torch.Tensor, list[str]]] = field(default_factory=dict)
    error: str | None = None

    def request_for(self, row: str) -> EditRequest:
        """The request as row `row` edits it: with the row's own mask, if it has one."""
        if row not in self.row_masks:
            return self.request
        mask, notes = self.row_masks[row]
        return replace(self.request, mask=mask, notes=notes)

    def describe(self) -> dict:
        return {
            "name": self.request.name,
            "prompt": self.item.text,
            "negative": self.item.negative,
            "category": self.item.category,
            "region": self.item.region,
            "seed": self.seed,
            "class": self.cls,
            "notes": list(self.request.notes),
        }


# ---- prompts -----------------------------------------------------------------------------------------


def read_prompt_file(path: str | Path) -> list[PromptItem]:
    """A prompt set: YAML/JSON `{category: [prompts]}` (a prompt a string or a mapping), a list of
    prompts or mappings `{text, category, region, negative}`, or `{prompts: <either>}`; or a text file,
    one prompt a line (`#` starts a comment)."""
    import yaml

    path = config_path(path)  # a file of yours, or a shipped one such as reproduce/prompts/scenes.yaml
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return [PromptItem(ln) for ln in lines if ln]
    data = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]

    def item(entry, category=None) -> PromptItem:
        if isinstance(entry, str):
            return PromptItem(entry, category)
        if not isinstance(entry, dict) or "text" not in entry or set(entry) - PROMPT_KEYS:
            raise ValueError(
                f"{path}: a prompt is a string or a mapping with keys {sorted(PROMPT_KEYS)} "
                f"('text' required), got {entry!r}"
            )
        return PromptItem(
            str(entry["text"]), entry.get("category", category), entry.get("region"), entry.get("negative")
        )

    if isinstance(data, dict):
        return [item(e, str(cat)) for cat, entries in data.items() for e in entries]
    if isinstance(data, list):
        return [item(e) for e in data]
    raise ValueError(f"{path}: expected a list of prompts or a mapping category -> prompts")


def caption_items(source: str, split: str, caption_index: int, synthetic_root: Path | None) -> list[PromptItem]:
    """Captions as prompts (see `Prompts.captions`)."""
    if source == "synthetic_birds":
        from pbw.data.synthetic import canonical_caption, load_split

        if synthetic_root is None:
            raise ExperimentError("captions: synthetic_birds needs real: {kind: synthetic_birds}")
        _, colors, files = load_split(synthetic_root, split)
        return [
            PromptItem(canonical_caption(c), meta={"part_colors": c, "image": f})
            for c, f in zip(colors, files, strict=True)
        ]
    path = Path(source).expanduser()
    if path.is_file():
        return [PromptItem(ln.strip()) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not path.is_dir():
        raise FileNotFoundError(
            f"caption source {source!r} is neither a file (one caption a line), a CUB-200-2011 "
            "folder (with Reed et al.'s text_c10 next to it) nor a text_c10-style folder"
        )
    from pbw.data.cub import find_cub_folder, read_cub_captions

    try:
        find_cub_folder(path)
        pairs = read_cub_captions(path, split)  # type: ignore[arg-type]
    except FileNotFoundError as e:
        if "images.txt" not in str(e):
            raise
        pairs = [
            (str(p.relative_to(path)), [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()])
            for p in sorted(path.rglob("*.txt"))
        ]
    items = []
    for image, captions in pairs:
        if captions:
            items.append(PromptItem(captions[min(caption_index, len(captions) - 1)], meta={"image": image}))
    if not items:
        raise ValueError(f"no captions found in {path}")
    return items


def load_prompts(p: Prompts, synthetic_root: Path | None = None, max_prompts: int | None = None) -> list[PromptItem]:
    """The prompt items of a task, in order."""
    if p.texts is not None:
        items = [PromptItem(t) for t in p.texts]
    elif p.template is not None:
        keys = list(p.values)
        items = []
        for combo in itertools.product(*(p.values[k] for k in keys)):
            fill = dict(zip(keys, combo, strict=True))
            items.append(PromptItem(p.template.format(**fill), meta=dict(fill)))
    elif p.file is not None:
        items = read_prompt_file(p.file)
    else:
        items = caption_items(p.captions, p.split, p.caption_index, synthetic_root)
    if p.categories is not None:
        items = [it for it in items if it.category in p.categories]
    if p.regions is not None:
        items = [it for it in items if it.region in p.regions]
    if p.shuffle_seed is not None:
        random.Random(p.shuffle_seed).shuffle(items)
    end = None if p.count is None else p.first + p.count
    picked = items[p.first : end]
    if p.count is not None and len(picked) < p.count:
        raise ValueError(
            f"the prompt source has only {len(items)} prompts after its filters; {p.first} skipped and {p.count} wanted"
        )
    if p.negative is not None:
        for it in picked:
            it.negative = it.negative or p.negative
    if max_prompts is not None:
        picked = picked[:max_prompts]
    if not picked:
        raise ValueError("the task has no prompts")
    return picked


# ---- classes -----------------------------------------------------------------------------------------
def resolve_class_ids(classes: list[int | str] | None, names_file: str | None) -> list[int | None]:
    """Class labels of a task (names through `names_file`, one a line, Places365 style `/b/bedroom 52`
    lines accepted); [None] when no classes are given."""
    if not classes:
        return [None]
    if all(isinstance(c, int) for c in classes):
        return list(classes)
    if names_file is None:
        raise ExperimentError(
            f"classes {classes} name classes: give the generator's class_names file "
            "(e.g. Places365's categories_places365.txt)"
        )
    from pbw.data.places import resolve_classes

    names = [ln.split()[0] for ln in Path(names_file).expanduser().read_text().splitlines() if ln.strip()]
    return resolve_classes(classes, names)


# ---- masks -------------------------------------------------------------------------------------------
def load_segmenter(spec: str) -> Callable:
    """The callable `module:function` (module importable from the Python path)."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ExperimentError(
            f"segmenter {spec!r} cannot be imported ({e}); give 'module:function' of a callable "
            "fn(image [3,R,R] in [-1,1], region: str, **segmenter_args) -> mask [R,R] in [0,1] "
            "or None"
        ) from e
    if not callable(fn):
        raise ExperimentError(f"segmenter {spec!r} is not callable")
    return fn


def request_mask(
    masks: Masks,
    item: PromptItem,
    seed: int,
    cls: int | None,
    index: int,
    resolution: int,
    start_image: Callable[[], torch.Tensor],
    segmenter: Callable | None,
) -> tuple[torch.Tensor | None, list[str]]:
    """The mask of one request ([1, 1, R, R]) and notes; (None, [why]) when the segmenter finds no region or
    the part segmenter no part."""
    region = item.region or ""
    spec = None
    if masks.files is not None:
        path = Path(masks.files.format(seed=seed, region=region, index=index, **{"class": cls}))
        if path.is_file():
            spec = str(path)
    if spec is None and segmenter is not None:
        m = segmenter(start_image(), region, **masks.segmenter_args)
        if m is None:
            return None, [f"the segmenter found no {region!r} in the image"]
        spec = m if torch.is_tensor(m) else np.asarray(m, np.float32)
    if spec is None and masks.part is not None:
        spec = PART_PREFIX + masks.part
    if spec is None and masks.boxes and region in masks.boxes:
        spec = masks.boxes[region]
    if spec is None:
        spec = masks.box
    if spec is None:
        raise MaskError(
            f"no mask for request {index} (region {region!r}, seed {seed}): no file {masks.files!r}, "
            f"no segmenter, no box for that region in boxes {sorted(masks.boxes or {})} and no box"
        )
    if is_part_spec(spec):  # found in the start image, as pbw-edit's --mask part:body
        mask, notes = load_mask(spec, resolution, masks.feather, allow_empty=True, image=start_image())
        if not mask.any():
            return None, [f"the part segmenter found no {spec[len(PART_PREFIX) :]} in the image"]
        return mask, notes
    return load_mask(spec, resolution, masks.feather)


def _decode(g: MaskableGenerator, codes: dict) -> torch.Tensor:
    with torch.no_grad():
        return g.decode(g.encode(codes), cond=codes)[0].cpu()


def _regions(task: Task, item: PromptItem, seed, cls, index, resolution, start_image):
    """A request's regions with their mask notes, or (None, why) when a region's mask is not found."""
    regions = []
    for j, spec in enumerate(task.regions):
        mask, notes = request_mask(spec.masks, item, seed, cls, index, resolution, start_image, None)
        if mask is None:
            return None, f"{notes[0]} (region {j + 1})"
        words = PromptSet.parse(spec.prompt.format(**item.meta), item.negative)
        regions.append((Region(words, mask), [f"region {j + 1}: {n}" for n in notes]))
    return regions, None


def plan_requests(
    task: Task,
    items: list[PromptItem],
    g: MaskableGenerator,
    class_ids: list[int | None],
    max_seeds: int | None = None,
    row_masks: dict[str, Masks] | None = None,
    keep_going: bool = False,
) -> tuple[list[Planned], list[str]]:
    """The requests of `task` on generator `g` (see `Task`), and notes (requests left out, and why).
    `max_seeds` cuts a product's seeds (a zip's one seed per prompt is cut by the prompts). `row_masks`:
    the own masks of rows (variant name -> `Masks`) on `g`, made per request too; a request that the
    task's or any row's masks leave out is left out of every row. With `keep_going`, a request whose
    mask cannot be made (e.g. an unreadable file) is planned with its `error` instead of raising."""
    if task.pairing == "zip":
        n = len(items) if task.seeds is None else min(task.seeds, len(items))  # (max_prompts cuts these)
        combos = [(task.first_seed + i, class_ids[0], items[i]) for i in range(n)]
    else:
        n = 1 if task.seeds is None else task.seeds
        if max_seeds is not None:
            n = min(n, max_seeds)
        combos = [(task.first_seed + s, c, it) for s in range(n) for c in class_ids for it in items]
    mask_sets = {} if task.masks is None else {None: task.masks, **(row_masks or {})}
    segmenters = {key: load_segmenter(m.segmenter) for key, m in mask_sets.items() if m.segmenter}
    planned, notes = [], []
    for index, (seed, cls, item) in enumerate(combos):
        codes = g.sample(1, seed=seed, **({"classes": cls} if cls is not None else {}))
        if cls is None and "class" in codes:
            cls = int(codes["class"][0])
        name = f"{index:03d}_seed{seed}" + (f"_class{cls}" if cls is not None else "")
        start_image = functools.cache(functools.partial(_decode, g, codes))
        masks, missing = {}, None
        try:
            for key, m in mask_sets.items():
                mask, mask_notes = request_mask(
                    m, item, seed, cls, index, g.resolution, start_image, segmenters.get(key)
                )
                if mask is None:
                    missing = mask_notes[0] + ("" if key is None else f" (the masks of row {key!r})")
                    break
                masks[key] = (mask, mask_notes)
        except Exception as e:
            if not keep_going:
                raise
            req = EditRequest(item.prompt_set(), codes, None, name)
            planned.append(Planned(req, item, seed, cls, index, error=f"its mask: {one_line(e)}"))
            continue
        if missing is not None:
            notes.append(f"request {name} ({item.text!r}) left out: {missing}")
            continue
        mask, mask_notes = masks.pop(None, (None, []))
        if task.regions:
            regions, missing = _regions(task, item, seed, cls, index, g.resolution, start_image)
            if regions is None:
                notes.append(f"request {name} ({item.text!r}) left out: {missing}")
                continue
            req = EditRequest(codes=codes, name=name, regions=[r for r, _ in regions])
            req.notes = [n for _, ns in regions for n in ns]
        else:
            req = EditRequest(item.prompt_set(), codes, mask, name, mask_notes)
        planned.append(Planned(req, item, seed, cls, index, masks))
    if not planned:
        raise ExperimentError(f"no requests left: {'; '.join(notes) or 'no seeds or prompts'}")
    return planned, notes


def evaluator_candidates(planned: list[Planned], max_others: int = 99) -> tuple[list[PromptSet], list[list[int]]]:
    """The evaluator's multiple choice: the task's distinct prompts (`catalog`) and, per request, its own
    prompt's index followed by up to `max_others` others: those for the same region when the prompt
    names one and others share it, else the task's other prompts (the next ones, cyclically)."""
    keys, catalog, regions = {}, [], []
    for p in planned:
        key = (p.item.text, p.item.negative)
        if key not in keys:
            keys[key] = len(catalog)
            catalog.append(p.item.prompt_set())
            regions.append(p.item.region)
    cands = []
    for p in planned:
        own = keys[(p.item.text, p.item.negative)]
        order = [(own + k) % len(catalog) for k in range(1, len(catalog))]
        same = [j for j in order if p.item.region is not None and regions[j] == p.item.region]
        cands.append([own] + (same or order)[:max_others])
    return catalog, cands
