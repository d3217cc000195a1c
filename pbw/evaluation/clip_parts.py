"""A CLIP's zero-shot part-color accuracy on real synthetic birds, seen as the editor shows them.

For `n` held-out birds (world `HELDOUT_SEED` = 7000: the tiny CLIP trains on world 0's birds, written by
lab/retrain_mini.sh, and on fresh birds of worlds 1000/1001, so 7000 is unseen) and each part p,
the CLIP ranks the prompts "a bird with a {color} {word}" (`prompt`), one per color of `COLOR_NAMES`;
a hit is the bird's true color of p ranking first (strictly above every other color). Three views:

- ``masked``: the editor's masked view without crops, scored once as `EvaluatorCLIP` does: only p's
  pixels kept, pasted onto blank (mask = label map == ``PART_LABELS[p]``);
- ``masked_crops``: the same view through the editor's K random crops (`SemanticNet.views`, crop
  scale 0.7-0.98), the cosine averaged over the crops as the editor's semantic score;
- ``whole``: the whole unmasked image with the prompt naming only p (the text-to-image situation).

Birds in which part p has no pixel (hidden) are left out of p's figures. Chance is 1 / len(COLOR_NAMES).

    python -m pbw.evaluation.clip_parts                       # the bundled mini CLIP, n = 256
    python -m pbw.evaluation.clip_parts --clip local-dir:runs/mini/clip --json clip_parts.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from pbw.data.synthetic import COLOR_NAMES, PART_LABELS, PARTS, draw_birds
from pbw.evaluation.judges import EvaluatorCLIP, accuracy
from pbw.semantic import PromptSet

HELDOUT_SEED = 7000
CROP_SEED = 0
PROMPT = "a bird with a {color} {word}"
PART_WORDS = {"body": "body", "head": "head", "wing": "wings", "tail": "tail", "beak": "beak"}
VIEWS = ("masked", "masked_crops", "whole")


def prompt(color: str, part: str) -> str:
    """The prompt naming one part's color, e.g. "a bird with a red body", "a bird with a blue wings"."""
    return PROMPT.format(color=color, word=PART_WORDS[part])


def catalog(part: str) -> list[PromptSet]:
    """One prompt set per color of `COLOR_NAMES` (in that order) for `part`."""
    return [PromptSet([prompt(c, part)], [1.0]) for c in COLOR_NAMES]


def candidates(true_color: int) -> list[int]:
    """Indices into `catalog`: the true color first, then every other color once."""
    return [true_color] + [c for c in range(len(COLOR_NAMES)) if c != true_color]


def ranks_first(scores: torch.Tensor, truth: torch.Tensor) -> list[bool]:
    """Per row of `scores` [N, C]: whether column `truth[i]` scores strictly above the other candidates."""
    table = scores.gather(1, torch.tensor([candidates(int(t)) for t in truth]))
    return (table[:, 1:] < table[:, :1]).all(1).tolist()


@torch.no_grad()
def crop_embeddings(
    evaluator: EvaluatorCLIP, images: torch.Tensor, masks: torch.Tensor, u: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """[N, D]: the mean over K crops (uniforms `u` [N, K, 3], `SemanticNet.views`) of the unit image
    embeddings of the masked views. A prompt's score with it is the cosine averaged over the crops."""
    net, out = evaluator.net, []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(evaluator.device)
        m = masks[i : i + batch_size].to(evaluator.device)
        e = net.encode_images(net.views(x, m, crops=u.shape[1], u=u[i : i + batch_size].to(evaluator.device)))
        out.append(e.view(len(x), u.shape[1], -1).mean(1).cpu())
    return torch.cat(out)


def check_settings(n: int, resolution: int, parts: Sequence[str], crops: int) -> None:
    """Refuse (ValueError) settings `part_color_accuracy` cannot measure."""
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"parts must be some of {','.join(PARTS)}, got {','.join(parts) or 'none'}")
    if n < 1 or resolution < 16 or crops < 0:
        raise ValueError(f"need n >= 1, resolution >= 16 and crops >= 0; got {n}, {resolution}, {crops}")


def part_color_accuracy(
    clip: str | EvaluatorCLIP,
    n: int = 256,
    seed: int = HELDOUT_SEED,
    resolution: int = 64,
    parts: Sequence[str] = ("body", "head", "wing", "tail"),
    crops: int = 8,
    crop_seed: int = CROP_SEED,
    device: str = "cpu",
) -> dict:
    """Zero-shot part-color accuracy of a CLIP (a spec or a loaded `EvaluatorCLIP`) on birds 0..n-1 of
    world `seed`: ``views[view][part]`` = {"value", "ci95", "n"} for each of `VIEWS` (``masked_crops``
    with `crops` crops drawn from `crop_seed`; left out when `crops` is 0), and ``chance``."""
    check_settings(n, resolution, parts, crops)
    evaluator = clip if isinstance(clip, EvaluatorCLIP) else EvaluatorCLIP(clip, view="paste_onto_blank", device=device)
    birds = draw_birds(n, resolution, seed=seed)
    images, maps = birds.tensors(), torch.from_numpy(birds.part_maps)
    whole = evaluator.embed(images, None)
    generator = torch.Generator().manual_seed(crop_seed)
    views = {v: {} for v in VIEWS if v != "masked_crops" or crops}
    for part in parts:
        masks = (maps == PART_LABELS[part])[:, None].float()
        shown = masks.flatten(1).any(1)
        truth = torch.from_numpy(birds.part_colors[:, PARTS.index(part)])[shown]
        prompts = catalog(part)
        embeddings = {"masked": evaluator.embed(images[shown], masks[shown]), "whole": whole[shown]}
        if crops:
            u = torch.rand(n, crops, 3, generator=generator)[shown]
            embeddings["masked_crops"] = crop_embeddings(evaluator, images[shown], masks[shown], u)
        for view, emb in embeddings.items():
            views[view][part] = accuracy(ranks_first(evaluator.prompt_scores(emb, prompts), truth))
    return {
        "clip": evaluator.spec,
        "seed": seed,
        "n": n,
        "resolution": resolution,
        "crops": crops,
        "crop_seed": crop_seed,
        "prompt": PROMPT,
        "part_words": {p: PART_WORDS[p] for p in parts},
        "colors": list(COLOR_NAMES),
        "chance": 1 / len(COLOR_NAMES),
        "views": views,
    }


def markdown(report: dict) -> str:
    """A table row per part: accuracy [95% interval] in each view, the birds counted, and chance."""
    names = {"masked": "masked view", "masked_crops": f"masked view, {report['crops']} crops", "whole": "whole image"}
    views = list(report["views"])
    parts = list(report["views"][views[0]])
    lines = ["| part | n | " + " | ".join(names[v] for v in views) + " |", "|---|---" + "|---" * len(views) + "|"]
    for p in parts:
        entries = [report["views"][v][p] for v in views]
        cells = [f"{e['value']:.3f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]" for e in entries]
        lines.append(f"| {p} | {report['views'][views[0]][p]['n']} | " + " | ".join(cells) + " |")
    lines.append("| chance | | " + " | ".join(f"{report['chance']:.3f}" for _ in views) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The command line; a bad input is one line on stderr and exit status 2."""
    from pbw.assets import mini_clip_spec
    from pbw.commandline import OneLineParser

    p = OneLineParser(
        prog="python -m pbw.evaluation.clip_parts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clip", default=None, help="CLIP spec (default: the bundled mini CLIP)")
    p.add_argument("--n", type=int, default=256, help="held-out birds")
    p.add_argument("--seed", type=int, default=HELDOUT_SEED, help="their world (no training uses 7000)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--parts", default="body,head,wing,tail", help=f"comma-separated, of {','.join(PARTS)}")
    p.add_argument("--crops", type=int, default=8, help="K random crops of the editor's view (0: skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    try:
        check_settings(args.n, args.resolution, parts, args.crops)
        clip = EvaluatorCLIP(args.clip or mini_clip_spec(), view="paste_onto_blank", device=args.device)
    except (ValueError, RuntimeError, FileNotFoundError) as e:  # open_clip: RuntimeError for an unknown model
        p.error(str(e).splitlines()[0])
    report = part_color_accuracy(clip, args.n, args.seed, args.resolution, parts, args.crops)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(markdown(report))


if __name__ == "__main__":
    main()
