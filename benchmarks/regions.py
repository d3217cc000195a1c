"""An edit of two regions at once against two one-region edits one after another, on the bundled mini
StyleGAN2 with edit.py's budget for it (edit/mini.yaml), alternating in one process: seconds
per edit, wall and CPU (the process's CPU time: with one thread, it does not depend on what else runs).

    OMP_NUM_THREADS=1 python benchmarks/regions.py --seeds 5000,5001 --json regions_bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from pbw.configs import config_path
from pbw.editing import EditRequest, Region, load_mask
from pbw.editing.options import build_editor, build_parser
from pbw.semantic import PromptSet

REGIONS = (("a bird with a red body", "part:body"), ("a bird with yellow wings", "part:wing"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="5000,5001", help="start images, one timed pair (joint, sequential) each")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    parser = build_parser()
    args = parser.instantiate(
        parser.parse_args(["--config", str(config_path("edit/mini.yaml")), "--progress", "false"])
    )
    editor = build_editor(args)
    g, settings = editor.generator, replace(args.settings, batch_size=1)
    times = {"joint": [], "sequential": []}
    for seed in (int(s) for s in a.seeds.split(",")):
        codes = g.sample(1, seed=seed)
        with torch.no_grad():
            image = g.decode(g.encode(codes), cond=codes)
        regions = [
            Region(PromptSet.parse(t), load_mask(m, g.resolution, args.feather, image=image)[0]) for t, m in REGIONS
        ]
        for mode in ("joint", "sequential"):
            wall, cpu = time.perf_counter(), time.process_time()
            if mode == "joint":
                editor.run([EditRequest(codes=codes, regions=regions)], settings, progress=False)
            else:
                first = editor.run([EditRequest(regions[0].prompt, codes, regions[0].mask)], settings, progress=False)
                editor.run(
                    [EditRequest(regions[1].prompt, mask=regions[1].mask, base=first[0])], settings, progress=False
                )
            times[mode].append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu})
    out = {
        mode: {k: sum(t[k] for t in ts) / len(ts) for k in ("wall", "cpu")} | {"n": len(ts)}
        for mode, ts in times.items()
    }
    out["ratio_cpu"] = out["joint"]["cpu"] / out["sequential"]["cpu"]
    out["ratio_wall"] = out["joint"]["wall"] / out["sequential"]["wall"]
    print(
        f"seconds per edit, joint: {out['joint']['cpu']:.1f} CPU ({out['joint']['wall']:.1f} wall); two sequential: "
        f"{out['sequential']['cpu']:.1f} CPU ({out['sequential']['wall']:.1f} wall); joint / sequential: "
        f"{out['ratio_cpu']:.2f} CPU, {out['ratio_wall']:.2f} wall (n = {out['joint']['n']} each)"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
