"""Seconds per GAN training step, fp32 vs bf16 autocast, on the CPU or a GPU; prints JSON.

Two figures per precision:
- `fwd_bwd_s`: G forward, D forward on the fakes, backward through both (one "G+D forward+backward").
- `iteration_s`: one full training iteration of the trainer's losses (D step on real + fake, then
  G step), with Adam updates: StyleGAN2 without the lazy regularizers; BigGAN with one D step
  (hinge loss) and one G step with the orthogonal regularization (one "G+D step").

    python benchmarks/train_step.py --family stylegan2 --resolution 64 --batch 4
    python benchmarks/train_step.py --family biggan --resolution 128 --ch 96 --batch 4
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def build_stylegan2(args, device, real):
    """The StyleGAN2 module and its (fwd_bwd, d_step, g_step) closures; d_step/g_step return losses."""
    from pbw.training.stylegan2 import StyleGAN2Module

    module = StyleGAN2Module(resolution=args.resolution, channel_base=args.channel_base, channel_max=args.channel_max,
                             augment=False, num_metric_samples=0, style_mixing_prob=0.9).to(device)
    G, D = module.generator, module.discriminator

    def fwd_bwd():
        return D(G(torch.randn(args.batch, module.hparams.z_dim, device=device))).float().sum()

    return (module, fwd_bwd, lambda: module._discriminator_step(real, do_r1=False)["_loss"],
            lambda: module._generator_step(args.batch, do_pl=False)["_loss"])


def build_biggan(args, device, real):
    """The BigGAN module (Places365 classes) and its (fwd_bwd, d_step, g_step) closures."""
    from pbw.training.biggan import BigGANModule, hinge_loss_d, hinge_loss_g, orthogonal_penalty

    dim_z = {128: 120, 256: 140}.get(args.resolution, 120)
    g_attention = {128: 64, 256: 128}.get(args.resolution, args.resolution // 2)
    module = BigGANModule(resolution=args.resolution, ch=args.ch, n_classes=365, dim_z=dim_z, g_attention=g_attention,
                          d_attention=64 if args.resolution >= 128 else args.resolution // 2,
                          num_metric_samples=0).to(device)
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(BUILDERS), default="stylegan2")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--channel-base", type=int, default=32768)
    parser.add_argument("--channel-max", type=int, default=512)
    parser.add_argument("--ch", type=int, default=96, help="BigGAN width multiplier")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = [measure(args, p) for p in args.precisions.split(",")]
    report = {"family": args.family, "resolution": args.resolution, "batch": args.batch, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}
    if len(results) == 2:
        report["bf16_speedup_fwd_bwd"] = round(results[0]["fwd_bwd_s"] / results[1]["fwd_bwd_s"], 2)
        report["bf16_speedup_iteration"] = round(results[0]["iteration_s"] / results[1]["iteration_s"], 2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
