"""The browser page's first edit, measured: with exactly the page's defaults (`python -m pbw.app` with no
arguments: the bundled mini StyleGAN2 and CLIP, the settings the page starts from), select the body of a
sample and paint "a bird with a <color> body"; the pixel oracle judges each edit (`color_oracle`).

    python -m lab.experiments.app_edit_rate --seeds 7000-7015 --colors red blue --out out/app_rate.json

Extra app arguments after `--` change the page's settings (e.g. `-- --settings.lr 0.01`)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from pbw.app.__main__ import build_painter
from pbw.evaluation.judges import color_oracle
from pbw.evaluation.stats import wilson_interval


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    app_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", default="7000-7015")
    p.add_argument("--colors", nargs="+", default=["red", "blue"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    painter, _ = build_painter(["--device", "cpu", *app_args])
    rows = []
    for start in painter.samples(args.seeds):
        mask = painter.select_part(start, "body")
        for color in args.colors:
            t0 = time.perf_counter()
            result = painter.edit(start, mask, f"a bird with a {color} body", seed=painter.settings.seed)
            took = time.perf_counter() - t0
            ok = color_oracle(start.edited, result.edited, mask, [color])["oracle_accuracy"] == 1.0
            m = result.metrics
            rows.append(
                {
                    "seed": start.name,
                    "color": color,
                    "took": ok,
                    "seconds": round(took, 1),
                    "score_before": m["semantic_score_start"],
                    "score_after": m["semantic_score"],
                    "lr": result.settings["lr"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    k = sum(r["took"] for r in rows)
    lo, hi = wilson_interval(k, len(rows))
    summary = {"rate": k / len(rows), "k": k, "n": len(rows), "ci95": [lo, hi], "app_args": app_args, "rows": rows}
    print(f"edits that took (oracle): {k}/{len(rows)} = {k / len(rows):.2f} [{lo:.2f}, {hi:.2f}]")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
