"""Seconds per Paint-by-Word edit (CMA-ES + Adam, paper settings) at the 256 px StyleGAN2 config
with ViT-B-32 (random weights: timing only), and the batched CMA-ES population against a
candidate-by-candidate loop, in the same run.

    python benchmarks/edit.py                      # GPU when available, else CPU
    python benchmarks/edit.py --device cpu --generations 2 --adam_steps 2 --json bench.json
    python benchmarks/edit.py --requests 8          # also a batch of 8 requests (one Editor batch)

Order: one full paper-setting edit, then the batch of requests (its population split in chunks under
`--max_images_per_forward`), each with its peak GPU memory; then the per-generation and per-step
timings. A full edit is timed end to end when `--full` is given (default on GPU); otherwise it is
estimated as generations x (seconds per batched generation) + steps x (seconds per Adam step). With
`--json`, the file is rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

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
    p.add_argument(
        "--max_images_per_forward",
        type=int,
        default=200,
        help="memory cap of the batch of requests: its CMA-ES population is evaluated in chunks of at most "
        "this many images (8 requests x 50 candidates of 256 px in one pass would need about 65-70 GiB)",
    )
    p.add_argument("--json", default=None, help="written after every measurement")
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

    def timed_edit(requests, **kw) -> float:
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        editor.run(requests, settings(generations=a.paper_generations, steps=a.paper_steps, **kw), progress=False)
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
        "max_images_per_forward": a.max_images_per_forward,
        "complete": False,
    }

    def record(**values) -> None:  # the JSON after every measurement: a killed run keeps what it measured
        res.update(values)
        for k, v in values.items():
            print(f"{k:>28}: {v:.3f}" if isinstance(v, float) else f"{k:>28}: {v}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2))

    def peak_gib() -> float | None:
        return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    def reset_peak() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    timed(generations=1, steps=0)  # warm-up
    full = device.type == "cuda" if a.full is None else a.full
    n = len(reqs)
    # The batch's population is split so that one forward pass holds at most max_images_per_forward images.
    chunk = max(1, min(a.population, a.max_images_per_forward // n))
    if full:  # the key figures first: one paper-setting edit, then a batch of n
        reset_peak()
        record(s_per_edit_measured=timed_edit(req), peak_gpu_memory_gib_single=peak_gib())
        if n > 1:
            reset_peak()
            seconds = timed_edit(reqs, population_chunk=chunk)
            record(
                **{
                    f"batch{n}_s_per_edit_measured": seconds,
                    f"batch{n}_s_per_request": seconds / n,
                    f"batch{n}_population_chunk": chunk,
                    f"peak_gpu_memory_gib_batch{n}": peak_gib(),
                }
            )
    batched = timed(generations=a.generations, steps=0).seconds_per("CMA-ES")
    loop = timed(generations=a.generations, steps=0, population_chunk=1).seconds_per("CMA-ES")
    record(s_per_generation_batched=batched, s_per_generation_loop=loop, batched_speedup=loop / batched)
    adam = timed(optimizer="adam", steps=a.adam_steps).seconds_per("Adam")
    record(
        s_per_adam_step=adam,
        s_per_edit_estimated=a.paper_generations * batched + a.paper_steps * adam,
        s_per_edit_loop_estimated=a.paper_generations * loop + a.paper_steps * adam,
    )
    if n > 1:  # all requests in one batch: their candidates share each forward pass
        gen = timed(reqs, generations=a.generations, steps=0, population_chunk=chunk).seconds_per("CMA-ES")
        record(**{f"batch{n}_s_per_generation": gen})
    record(complete=True)
    return res


if __name__ == "__main__":
    main()
