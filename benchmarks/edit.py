"""Seconds per Paint-by-Word edit (CMA-ES + Adam, paper settings) at the 256 px StyleGAN2 config
with ViT-B-32 (random weights: timing only), and the batched CMA-ES population against a
candidate-by-candidate loop, in the same run.

    python benchmarks/edit.py                      # GPU when available, else CPU
    python benchmarks/edit.py --device cpu --generations 2 --adam_steps 2 --json bench.json
    python benchmarks/edit.py --requests 8          # also a batch of 8 requests (one Editor batch)

A full edit is timed end to end when `--full` is given (default on GPU); otherwise it is estimated
as generations x (seconds per batched generation) + steps x (seconds per Adam step), measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbw.editing import Editor, EditProgress, EditRequest, EditSettings, PreservationLoss, load_mask  # noqa: E402
from pbw.models.stylegan2 import StyleGAN2Generator  # noqa: E402
from pbw.semantic import PromptSet, SemanticNet  # noqa: E402


class Clock(EditProgress):
    """Timestamps of every CMA-ES generation and Adam step (synchronized on CUDA)."""

    def __init__(self, device: torch.device):
        self.times: dict[str, list[float]] = {"CMA-ES": [], "Adam": []}
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        super().__init__(lambda phase, done, total: (sync(), self.times[phase].append(time.perf_counter())))

    def seconds_per(self, phase: str) -> float:
        """Median time between consecutive reports of a phase (start-up excluded)."""
        t = self.times[phase]
        return float(np.median(np.diff(t))) if len(t) > 1 else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--channel_base", type=int, default=32768)
    p.add_argument("--channel_max", type=int, default=512)
    p.add_argument(
        "--clip",
        default="ViT-B-32:random",
        help="NAME[:PRETRAINED] (SemanticNet.from_spec); a bare NAME means random weights",
    )
    p.add_argument("--crops", type=int, default=32)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--paper_generations", type=int, default=20)
    p.add_argument("--paper_steps", type=int, default=100)
    p.add_argument("--generations", type=int, default=3, help="generations timed (batched and loop each; >= 2)")
    p.add_argument("--adam_steps", type=int, default=5, help="Adam steps timed (>= 2)")
    p.add_argument("--requests", type=int, default=1, help="also time a batch of this many requests (> 1)")
    p.add_argument(
        "--full",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time one full paper-setting edit (default: on GPU only)",
    )
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    clip = a.clip if ":" in a.clip else f"{a.clip}:random"
    editor = Editor(
        StyleGAN2Generator(a.resolution, channel_base=a.channel_base, channel_max=a.channel_max),
        SemanticNet.from_spec(clip, crops=a.crops),
        PreservationLoss(True, "alex", "random"),
        a.device,
    )
    device, g = editor.device, editor.generator
    mask = load_mask("0.25,0.1,0.75,0.5", a.resolution)[0]
    reqs = [
        EditRequest(PromptSet.parse("a bird with a bright red head"), g.sample(1, seed=i), mask)
        for i in range(max(a.requests, 1))
    ]
    req = reqs[:1]

    def settings(**kw):
        return EditSettings(population=a.population, crops=a.crops, batch_size=len(reqs), **kw)

    def timed(requests=req, **kw) -> Clock:
        clock = Clock(device)
        editor.run(requests, settings(**kw), [clock], progress=False)
        return clock

    def timed_edit(requests) -> float:
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        editor.run(requests, settings(generations=a.paper_generations, steps=a.paper_steps), progress=False)
        sync()
        return time.perf_counter() - t0

    res = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "resolution": a.resolution,
        "clip": clip,
        "crops": a.crops,
        "population": a.population,
        "generations": a.paper_generations,
        "steps": a.paper_steps,
        "space": g.space(settings().space, masked=True),
    }
    timed(generations=1, steps=0)  # warm-up
    batched = timed(generations=a.generations, steps=0).seconds_per("CMA-ES")
    loop = timed(generations=a.generations, steps=0, population_chunk=1).seconds_per("CMA-ES")
    res["s_per_generation_batched"], res["s_per_generation_loop"] = batched, loop
    res["batched_speedup"] = loop / batched
    res["s_per_adam_step"] = timed(optimizer="adam", steps=a.adam_steps).seconds_per("Adam")
    res["s_per_edit_estimated"] = (
        a.paper_generations * res["s_per_generation_batched"] + a.paper_steps * res["s_per_adam_step"]
    )
    res["s_per_edit_loop_estimated"] = (
        a.paper_generations * res["s_per_generation_loop"] + a.paper_steps * res["s_per_adam_step"]
    )
    full = device.type == "cuda" if a.full is None else a.full
    if full:
        res["s_per_edit_measured"] = timed_edit(req)
    if len(reqs) > 1:  # all requests in one batch: their candidates share each forward pass
        n = len(reqs)
        res[f"batch{n}_s_per_generation"] = timed(reqs, generations=a.generations, steps=0).seconds_per("CMA-ES")
        if full:
            res[f"batch{n}_s_per_edit_measured"] = timed_edit(reqs)
            res[f"batch{n}_s_per_request"] = res[f"batch{n}_s_per_edit_measured"] / n
    if device.type == "cuda":
        res["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    for k, v in res.items():
        print(f"{k:>28}: {v:.3f}" if isinstance(v, float) else f"{k:>28}: {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
