"""Usage: python -m lab.experiments.regions_painted_reading OUT (the folder holding reg_joint_0..3,
reg_seq_a, reg_seq_b, reg_merged from docs/regions.md's commands).

Second reading of the two-region rows: per region, the color_oracle's rule (the color painted into the
region's mask, as for one-region edits) on the gallery's 8-bit PNGs; masks = the parts the part segmenter
finds in the start image (the edit's own masks)."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from pbw.evaluation.oracle import painted_color, region_color
from pbw.evaluation.segmenter import part_mask
from pbw.evaluation.stats import wilson_interval

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "out")


def img(p):
    return torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)


rows = {
    "joint": ["reg_joint_0", "reg_joint_1", "reg_joint_2", "reg_joint_3"],
    "sequential": ["reg_seq_a", "reg_seq_b"],
    "merged": ["reg_merged"],
}
for label, dirs in rows.items():
    hits = []
    for d in dirs:
        res = json.loads((OUT / d / "results.json").read_text())["tasks"]["two_regions"]
        (variant,) = res["rows"]
        for q in res["requests"]["stylegan2"]:
            body, wing = q["prompt"].split(" body and ")[0].split()[-1], q["prompt"].split(" body and ")[1].split()[0]
            base = OUT / d / "gallery/img/two_regions/stylegan2"
            x0 = img(base / f"{q['name']}_original.png")
            slug = [p for p in base.iterdir() if p.name.startswith(q["name"] + "__")][0]
            x1 = img(slug)
            h = []
            for part, color in (("body", body), ("wing", wing)):
                m = part_mask(x0, [part]).float()
                h.append(
                    painted_color(x0, x1, m) == color or (region_color(x0, m) == color and region_color(x1, m) == color)
                )
            hits.append(h)
    n = len(hits)

    def f(k, n=n):
        return f"{k}/{n} = {k / n:.2f} [{wilson_interval(k, n)[0]:.2f}, {wilson_interval(k, n)[1]:.2f}]"

    print(
        f"| {label} | {n} | {f(sum(all(h) for h in hits))} | {f(sum(h[0] for h in hits))} | {f(sum(h[1] for h in hits))} |"
    )
