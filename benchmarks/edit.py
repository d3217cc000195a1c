"""Seconds per Paint-by-Word edit (CMA-ES + Adam, paper settings) at the 256 px StyleGAN2 config
with ViT-B-32 (random weights: timing only), and the batched CMA-ES population against a
candidate-by-candidate loop, in the same run.

    python benchmarks/edit.py                      # GPU when available, else CPU
    python benchmarks/edit.py --device cpu --generations 1 --adam_steps 2 --json bench.json
    python benchmarks/edit.py --requests 8          # also a batch of 8 requests (one EditModule)

A full edit is timed end to end when `--full` is given (default on GPU); otherwise it is estimated
as generations x (seconds per batched generation) + steps x (seconds per Adam step), measured here.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbw.editing import EditModule, EditRequest, EditSettings, PreservationLoss, load_mask, run_edit  # noqa: E402
from pbw.models.stylegan2 import StyleGAN2Generator  # noqa: E402
from pbw.semantic import PromptSet, SemanticNet  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--channel_base", type=int, default=32768)
    p.add_argument("--channel_max", type=int, default=512)
    p.add_argument("--clip", default="ViT-B-32:random", help="NAME[:PRETRAINED] (SemanticNet.from_spec); "
                   "a bare NAME means random weights")
    p.add_argument("--crops", type=int, default=32)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--paper_generations", type=int, default=20)
    p.add_argument("--paper_steps", type=int, default=100)
    p.add_argument("--generations", type=int, default=2, help="generations timed (batched and loop each)")
    p.add_argument("--adam_steps", type=int, default=5, help="Adam steps timed")
    p.add_argument("--requests", type=int, default=1, help="also time a batch of this many requests (> 1)")
    p.add_argument("--full", action=argparse.BooleanOptionalAction, default=None,
                   help="also time one full paper-setting edit (default: on GPU only)")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (cuDNN convs already use TF32)
    torch.manual_seed(0)
    g = StyleGAN2Generator(a.resolution, channel_base=a.channel_base, channel_max=a.channel_max).to(device).eval()
    clip = SemanticNet.from_spec(a.clip if ":" in a.clip else f"{a.clip}:random", crops=a.crops).to(device)
    pres = PreservationLoss(True, "alex", "random").to(device)
    mask = load_mask("0.25,0.1,0.75,0.5", a.resolution)[0]
    reqs = [EditRequest(g.sample(1, seed=i), PromptSet.parse("a bird with a bright red head"), mask)
            for i in range(max(a.requests, 1))]

    def module(req=reqs[:1], **kw):
        s = EditSettings(population=a.population, **kw)
        return EditModule(g, clip, req, s, pres).to(device)

    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "resolution": a.resolution, "clip": a.clip if ":" in a.clip else f"{a.clip} (random weights)",
           "crops": a.crops, "population": a.population, "generations": a.paper_generations, "steps": a.paper_steps}
    module(generations=1, steps=0).run_cma(progress=False)  # warm-up
    t_b, _ = _timed(lambda: module(generations=a.generations, steps=0).run_cma(progress=False), device)
    t_l, _ = _timed(lambda: module(generations=a.generations, steps=0, population_chunk=1).run_cma(progress=False),
                    device)
    res["s_per_generation_batched"] = t_b / a.generations
    res["s_per_generation_loop"] = t_l / a.generations
    res["batched_speedup"] = t_l / t_b
    m = module(optimizer="adam", steps=a.adam_steps)
    t_a, _ = _timed(lambda: run_edit(m, "gpu" if device.type == "cuda" else "cpu", False, False), device)
    res["s_per_adam_step"] = t_a / a.adam_steps  # includes the Trainer's start-up
    res["s_per_edit_estimated"] = (a.paper_generations * res["s_per_generation_batched"]
                                   + a.paper_steps * res["s_per_adam_step"])
    res["s_per_edit_loop_estimated"] = (a.paper_generations * res["s_per_generation_loop"]
                                        + a.paper_steps * res["s_per_adam_step"])
    full = device.type == "cuda" if a.full is None else a.full
    if full:
        m = module(generations=a.paper_generations, steps=a.paper_steps)
        res["s_per_edit_measured"], _ = _timed(lambda: run_edit(m, "gpu" if device.type == "cuda" else "cpu",
                                                                 False, False), device)
    if len(reqs) > 1:  # one EditModule holding all requests: their candidates share each batch
        n = len(reqs)
        t, _ = _timed(lambda: module(reqs, generations=a.generations, steps=0).run_cma(progress=False), device)
        res[f"batch{n}_s_per_generation"] = t / a.generations
        if full:
            m = module(reqs, generations=a.paper_generations, steps=a.paper_steps)
            res[f"batch{n}_s_per_edit_measured"], _ = _timed(
                lambda: run_edit(m, "gpu" if device.type == "cuda" else "cpu", False, False), device)
            res[f"batch{n}_s_per_request"] = res[f"batch{n}_s_per_edit_measured"] / n
    if device.type == "cuda":
        res["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    for k, v in res.items():
        print(f"{k:>28}: {v:.3f}" if isinstance(v, float) else f"{k:>28}: {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
