"""Seconds per GAN training step, fp32 vs bf16 autocast, on the CPU or a GPU; prints JSON.

Two figures per precision:
- `fwd_bwd_s`: G forward, D forward on the fakes, backward through both (one "G+D forward+backward").
- `iteration_s`: one full training iteration of the trainer's losses (D step on real + fake, then
  G step), with Adam updates: StyleGAN2 without the lazy regularizers; BigGAN with one D step
  (hinge loss) and one G step with the orthogonal regularization (one "G+D step").

    python benchmarks/train_step.py --family stylegan2 --resolution 64 --batch 4
    python benchmarks/train_step.py --family biggan --resolution 128 --ch 96 --batch 4

`--lightning CONFIG` instead times the trainer itself: StyleGAN2Module.training_step under a
Lightning Trainer (lazy R1/path-length regularizers on their intervals, ADA, EMA, the config's
precision, e.g. bf16-mixed) on random "real" images at the config's resolution and batch per device,
per `--cuda-ops` mode (fused kernels vs reference), reported as seconds per iteration and per kimg.
`--steps` should be a multiple of the R1 interval (16) so the timed iterations hold their share of
regularization. `--augment-p 0.2` starts ADA above 0, so that R1 goes through the augmentation in the
timed window. `--network nvidia-auto` times the network NVIDIA's expected training times were measured
with (stylegan2-ada-pytorch `--cfg=auto` at 256 px on one GPU: half width, 2 mapping layers, batch 16)
instead of the config's own (config-f). On CUDA, the host syncs inside each timed `training_step` are
counted with `torch.cuda.set_sync_debug_mode`. With `--devices 2` it is a DDP smoke test that also
checks that every rank ends with the same weights.

    python benchmarks/train_step.py --lightning stylegan2/cub256.yaml --cuda-ops cuda,ref --steps 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from pbw.configs import config_path

# stylegan2-ada-pytorch's `--cfg=auto` at 256 px on one GPU, the setting of its expected training times
# (21.6-24.2 s/kimg on one V100): fmaps 0.5 (channel_base 16384), 2 mapping layers, batch 16, minibatch-std
# groups of 4, gamma = 0.0002 * 256^2 / 16, EMA 16 * 10 / 32 kimg.
NVIDIA_AUTO_256 = dict(
    channel_base=16384, channel_max=512, mapping_layers=2, mbstd_group_size=4, r1_gamma=0.8192, ema_kimg=5.0
)
NVIDIA_AUTO_BATCH = 16


def build_stylegan2(args, device, real):
    """The StyleGAN2 module and its (fwd_bwd, d_step, g_step) closures; d_step/g_step return losses."""
    from pbw.training.stylegan2 import StyleGAN2Module

    module = StyleGAN2Module(
        resolution=args.resolution,
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        augment=False,
        num_metric_samples=0,
        style_mixing_prob=0.9,
    ).to(device)
    G, D = module.generator, module.discriminator

    def fwd_bwd():
        return D(G(torch.randn(args.batch, module.hparams.z_dim, device=device))).float().sum()

    return (
        module,
        fwd_bwd,
        lambda: module._discriminator_step(real, do_r1=False)["_loss"],
        lambda: module._generator_step(args.batch, do_pl=False)["_loss"],
    )


def build_biggan(args, device, real):
    """The BigGAN module (Places365 classes) and its (fwd_bwd, d_step, g_step) closures."""
    from pbw.training.biggan import BigGANModule, hinge_loss_d, hinge_loss_g, orthogonal_penalty

    dim_z = {128: 120, 256: 140}.get(args.resolution, 120)
    g_attention = {128: 64, 256: 128}.get(args.resolution, args.resolution // 2)
    module = BigGANModule(
        resolution=args.resolution,
        ch=args.ch,
        n_classes=365,
        dim_z=dim_z,
        g_attention=g_attention,
        d_attention=64 if args.resolution >= 128 else args.resolution // 2,
        num_metric_samples=0,
    ).to(device)
    G, D = module.generator, module.discriminator
    ortho_params = [p for name, p in G.named_parameters() if p.ndim >= 2 and not name.startswith("shared.")]
    labels = torch.randint(0, 365, (args.batch,), device=device)

    def noise():
        return torch.randn(args.batch, G.dim_z, device=device), torch.randint(0, 365, (args.batch,), device=device)

    def fwd_bwd():
        z, y = noise()
        return D(G(z, y), y).float().sum()

    def d_step():
        z, y = noise()
        with torch.no_grad():
            fake = G(z, y)
        scores_fake, scores_real = D(torch.cat([fake, real]), torch.cat([y, labels])).split(args.batch)
        return sum(hinge_loss_d(scores_real, scores_fake))

    def g_step():
        z, y = noise()
        return hinge_loss_g(D(G(z, y), y)) + 0.5 * module.hparams.g_ortho * orthogonal_penalty(ortho_params)

    return module, fwd_bwd, d_step, g_step


def timed(fn, device, steps: int, warmup: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call. On a shared CPU the CPU time divided by the
    thread count estimates the wall time the step would take on an idle machine."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def measure(args, precision: str) -> dict:
    device = torch.device(args.device)
    real = torch.rand(args.batch, 3, args.resolution, args.resolution, device=device) * 2 - 1
    module, fwd_bwd_loss, d_loss_fn, g_loss_fn = BUILDERS[args.family](args, device, real)
    G, D = module.generator, module.discriminator
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def fwd_bwd():
        with autocast:
            loss = fwd_bwd_loss()
        loss.backward()

    def iteration():
        with autocast:
            d_loss = d_loss_fn()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        with autocast:
            g_loss = g_loss_fn()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)

    out = {"precision": precision}
    for name, fn in (("fwd_bwd", fwd_bwd), ("iteration", iteration)):
        wall, cpu = timed(fn, device, args.steps, args.warmup)
        out[f"{name}_s"], out[f"{name}_cpu_s"] = round(wall, 4), round(cpu, 4)
    out["images_per_s"] = round(args.batch / out["iteration_s"], 3)
    return out


BUILDERS = {"stylegan2": build_stylegan2, "biggan": build_biggan}


class _RepeatBatch(torch.utils.data.IterableDataset):
    """The same batch forever (no DistributedSampler is added to an iterable dataset)."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


def _lightning_run(args, cfg: dict, mode: str) -> dict:
    """Fit `warmup + steps` iterations of the config's StyleGAN2Module with the cuda_ops `mode`;
    time the last `steps` (rank 0's clock; CUDA synchronized at both ends)."""
    import pytorch_lightning as pl

    from cuda_ops import loader
    from pbw.training.stylegan2 import StyleGAN2Module

    init = {k: v for k, v in cfg["model"]["init_args"].items() if k != "feature_extractor"}
    batch = args.batch or cfg["data"]["init_args"]["batch_size"]
    if args.network == "nvidia-auto":
        init |= NVIDIA_AUTO_256
        batch = args.batch or NVIDIA_AUTO_BATCH
    for key in ("resolution", "channel_base", "channel_max", "augment_p"):
        if getattr(args, key) is not None:
            init[key] = getattr(args, key)
    init["num_metric_samples"] = 0
    loader.set_mode(mode)
    pl.seed_everything(0, verbose=False)
    module = StyleGAN2Module(**init)
    real = torch.rand(batch, 3, init["resolution"], init["resolution"]) * 2 - 1
    iterations = args.warmup + args.steps

    class Timer(pl.Callback):
        start = end = None

        def _sync(self, trainer):
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize(trainer.strategy.root_device)

        syncs: list[int] = []

        def on_train_start(self, trainer, pl_module):
            if trainer.strategy.root_device.type == "cuda":  # count the host syncs inside the step
                step, counts = pl_module.training_step, self.syncs

                def counted(*a, **k):
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        torch.cuda.set_sync_debug_mode("warn")
                        try:
                            return step(*a, **k)
                        finally:
                            torch.cuda.set_sync_debug_mode(0)
                            counts.append(sum("synchroniz" in str(w.message) for w in caught))

                pl_module.training_step = counted

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == args.warmup:
                self._sync(trainer)
                if trainer.strategy.root_device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self._sync(trainer)
            self.end = time.perf_counter()
            # every rank must end with the same weights (DDP averaged the same gradients)
            flat = torch.stack([p.detach().double().sum() for p in pl_module.parameters()])
            gathered = trainer.strategy.all_gather(flat).reshape(trainer.world_size, -1)
            self.ranks_equal = bool((gathered == gathered[0]).all())
            self.finite = bool(torch.isfinite(flat).all())

    timer = Timer()
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        precision=args.precision or cfg.get("trainer", {}).get("precision", "32-true"),
        max_steps=2 * iterations,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    try:
        trainer.fit(module, torch.utils.data.DataLoader(_RepeatBatch({"image": real}), batch_size=None))
    finally:
        loader.set_mode(None)
    device = trainer.strategy.root_device
    seconds = (timer.end - timer.start) / args.steps
    global_batch = batch * trainer.world_size
    out = {
        "cuda_ops": mode,
        "fused_kernels_used": device.type == "cuda" and mode != "ref" and loader.load_extension() is not None,
        "iteration_s": round(seconds, 4),
        "s_per_kimg": round(seconds * 1000 / global_batch, 3),
        "images_per_s": round(global_batch / seconds, 2),
        "iterations": int(module.iteration),
        "world_size": trainer.world_size,
        "ranks_equal": timer.ranks_equal,
        "weights_finite": timer.finite,
    }
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        timed = timer.syncs[args.warmup :]
        out["host_syncs_per_step"] = round(sum(timed) / max(len(timed), 1), 2)
    return out | {
        "_meta": {
            "network": args.network,
            "resolution": init["resolution"],
            "batch_per_device": batch,
            "precision": trainer.precision,
            "global_rank": trainer.global_rank,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "r1_interval": init.get("r1_interval", 16),
            "pl_interval": init.get("pl_interval", 4),
            "augment": init.get("augment", True),
        }
    }


def lightning_main(args) -> dict:
    import yaml

    for message in (".*module\\(s\\) in eval mode.*", ".*no `val_dataloader`.*"):
        warnings.filterwarnings("ignore", message=message)
    cfg = yaml.safe_load(config_path(args.lightning).read_text())
    modes = args.cuda_ops.split(",")
    results = []
    meta = None
    for mode in modes:  # with --json, the report is rewritten after each mode (a killed run keeps the first)
        try:
            results.append(_lightning_run(args, cfg, mode))
        except Exception as exc:  # e.g. `cuda` without a working build: still time the other modes
            if args.devices != 1:
                raise
            results.append({"cuda_ops": mode, "error": f"{type(exc).__name__}: {exc}"[:1000]})
            print(f"cuda_ops={mode} failed: {results[-1]['error']}", file=sys.stderr)
        meta = next((r["_meta"] for r in results if "_meta" in r), None)
        if meta is None:
            continue
        report = {
            "config": args.lightning,
            **{k: v for k, v in meta.items() if k != "global_rank"},
            "warmup": args.warmup,
            "steps": args.steps,
            "torch": torch.__version__,
            "results": [{k: v for k, v in r.items() if k != "_meta"} for r in results],
            "complete": len(results) == len(modes),
        }
        by_mode = {r["cuda_ops"]: r for r in report["results"] if "error" not in r}
        fused = by_mode.get("cuda") or by_mode.get("auto")
        if fused and "ref" in by_mode:
            report["fused_speedup"] = round(by_mode["ref"]["iteration_s"] / fused["iteration_s"], 3)
        if meta["global_rank"] == 0 and args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    if meta is None:
        raise RuntimeError(f"every cuda_ops mode failed: {[r['error'] for r in results]}")
    if meta["global_rank"] == 0:
        print(json.dumps(report, indent=2))
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(BUILDERS), default="stylegan2")
    parser.add_argument("--resolution", type=int, default=None, help="default: 64 (--lightning: the config's)")
    parser.add_argument("--channel-base", type=int, default=None, help="default: 32768 (--lightning: the config's)")
    parser.add_argument("--channel-max", type=int, default=None, help="default: 512 (--lightning: the config's)")
    parser.add_argument("--ch", type=int, default=96, help="BigGAN width multiplier")
    parser.add_argument("--batch", type=int, default=None, help="default: 4 (--lightning: the config's per device)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3; --lightning: 16)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1; --lightning: 4)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    lit = parser.add_argument_group("--lightning (the StyleGAN2 trainer under a Lightning Trainer)")
    lit.add_argument(
        "--lightning",
        metavar="CONFIG",
        default=None,
        help="a StyleGAN2 training YAML (e.g. stylegan2/cub256.yaml)",
    )
    lit.add_argument("--cuda-ops", default="auto", help="cuda_ops modes to time, e.g. cuda,ref (fused vs reference)")
    lit.add_argument(
        "--network",
        choices=["config", "nvidia-auto"],
        default="config",
        help="the config's networks, or those of NVIDIA's --cfg=auto at 256 px (their s/kimg figures)",
    )
    lit.add_argument("--augment-p", type=float, default=None, help="ADA's starting p (default: the config's)")
    lit.add_argument("--precision", default=None, help="Lightning precision (default: the config's)")
    lit.add_argument("--accelerator", default="auto")
    lit.add_argument("--devices", default="1")
    lit.add_argument("--strategy", default="auto")
    lit.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lightning:
        args.steps = 16 if args.steps is None else args.steps
        args.warmup = 4 if args.warmup is None else args.warmup
        args.devices = int(args.devices) if args.devices.isdigit() else args.devices
        return lightning_main(args)
    for key, default in (
        ("resolution", 64),
        ("channel_base", 32768),
        ("channel_max", 512),
        ("batch", 4),
        ("steps", 3),
        ("warmup", 1),
    ):
        if getattr(args, key) is None:
            setattr(args, key, default)
    torch.manual_seed(0)
    results = [measure(args, p) for p in args.precisions.split(",")]
    report = {
        "family": args.family,
        "resolution": args.resolution,
        "batch": args.batch,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
    }
    if len(results) == 2:
        report["bf16_speedup_fwd_bwd"] = round(results[0]["fwd_bwd_s"] / results[1]["fwd_bwd_s"], 2)
        report["bf16_speedup_iteration"] = round(results[0]["iteration_s"] / results[1]["iteration_s"], 2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
