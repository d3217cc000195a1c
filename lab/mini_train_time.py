"""Seconds per iteration of a mini GAN config under the real trainer, and what fits in a time budget.

Runs `train.py fit --config CONFIG` for a few iterations (no validation, no checkpoints, no logger),
times every iteration after `--warmup` ones (data loading included: with fresh birds the drawing is
part of the cost), and prints JSON: seconds per iteration and per kimg, and the iterations, kimg and
`trainer.max_steps` that fit in `--budget-min` minutes with `--reserve` of them left for validation
and checkpoints. Run it the way the training will run (threads, alone on the machine or not):

    OMP_NUM_THREADS=1 python -m lab.mini_train_time --config mini/stylegan2_64.yaml
    python -m lab.mini_train_time --config mini/biggan_64.yaml --iterations 12 -- \\
        --data.init_args.num_workers 0

Arguments after `--` go to train.py unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import pytorch_lightning as pl


class IterationTimer(pl.Callback):
    """Wall time between consecutive training batch ends, and the images per iteration."""

    def __init__(self):
        self.times: list[float] = []
        self.images: list[int] = []
        self.steps: list[int] = []
        self._last: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._last is None:
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self.images.append(len(batch["image"]) * trainer.world_size)
        self.steps.append(trainer.global_step)
        self._last = now


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--iterations", type=int, default=24, help="timed iterations (after the warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--budget-min", type=float, default=150.0)
    p.add_argument("--reserve", type=float, default=0.08, help="share of the budget kept for validation etc.")
    args = p.parse_args(argv)

    from pbw.cli import train_main

    timer = IterationTimer()
    total = args.warmup + args.iterations
    t0 = time.perf_counter()

    class Stop(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if len(timer.times) >= total:
                trainer.should_stop = True

    import pbw.cli as pcli

    original = pcli.PbwCLI.instantiate_trainer

    def instantiate_trainer(self, **kwargs):
        trainer = original(self, **kwargs)
        trainer.callbacks.extend([timer, Stop()])
        return trainer

    pcli.PbwCLI.instantiate_trainer = instantiate_trainer
    try:
        cli = train_main(
            [
                "fit",
                "--config",
                args.config,
                "--trainer.logger",
                "false",
                "--trainer.enable_checkpointing",
                "false",
                "--trainer.limit_val_batches",
                "0",
                "--trainer.callbacks",
                "null",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.max_time",
                "null",
                "--trainer.default_root_dir",
                "/tmp/pbw_mini_train_time",
                *extra,
            ]
        )
    finally:
        pcli.PbwCLI.instantiate_trainer = original
    timed = timer.times[args.warmup : total]
    steps_per_it = (timer.steps[-1] - timer.steps[0]) / max(len(timer.steps) - 1, 1)
    s_it = statistics.median(timed)
    images = timer.images[-1]
    usable = args.budget_min * 60 * (1 - args.reserve)
    iterations = int(usable / s_it)
    out = {
        "config": args.config,
        "extra": extra,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(),
        "timed_iterations": len(timed),
        "s_per_iteration_median": s_it,
        "s_per_iteration_mean": statistics.mean(timed),
        "images_per_iteration": images,
        "s_per_kimg": s_it * 1000 / images,
        "optimizer_steps_per_iteration": steps_per_it,
        "budget_min": args.budget_min,
        "fits": {
            "iterations": iterations,
            "kimg": iterations * images / 1000,
            "max_steps": int(iterations * steps_per_it),
        },
        "wall_s": time.perf_counter() - t0,
        "model": type(cli.model).__name__,
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
