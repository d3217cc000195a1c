"""Speed and memory of pbw's fused CUDA ops vs the reference PyTorch ops (and vs the reference under
torch.compile): every op shape of a StyleGAN2 at `--resolution` (forward + backward), and a whole
G+D training step. Prints a table of times, peak memory and ratios, then JSON.

    python benchmarks/ops.py                      # 256 px, batch 8, on the GPU
    python benchmarks/ops.py --json ops.json      # also write the JSON to a file
    python benchmarks/ops.py --device cpu --resolution 32 --channel-base 256 --channel-max 16 --iters 1
    python benchmarks/ops.py --compile-res 256 --no-train-step   # compile the reference at 256 px only

Without CUDA it still runs (the reference paths only) and says that CUDA is unavailable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from cuda_ops import bias_act, loader, setup_filter, upfirdn2d, upsample2d  # noqa: E402

IMPLS = ("cuda", "auto", "ref", "ref_compiled")


def op_cases(resolution: int, batch: int, channel_base: int, channel_max: int) -> list[dict]:
    """The bias_act/upfirdn2d calls of a StyleGAN2 G and D at `resolution` (unique name + shape)."""
    cases: dict[str, dict] = {}

    def add(name, shape, fn):
        cases.setdefault(name, {"name": name, "shape": list(shape), "fn": fn, "res": res})

    res = 4
    while res <= resolution:
        c = min(channel_base // res, channel_max)
        add(
            f"bias_act lrelu {res}px",
            (batch, c, res, res),
            lambda x, impl: bias_act(x, x.new_zeros(x.shape[1]), act="lrelu", impl=impl),
        )
        add(
            f"bias_act linear toRGB {res}px",
            (batch, 3, res, res),
            lambda x, impl: bias_act(x, x.new_zeros(x.shape[1]), impl=impl),
        )
        if res >= 8:
            # G up-conv: FIR after the stride-2 transposed conv, [2r'+1]^2 -> [r]^2
            add(
                f"upfirdn2d upconv-FIR {res}px",
                (batch, c, res + 1, res + 1),
                lambda x, impl: upfirdn2d(x, _FILTER[x.device], padding=1, gain=4, impl=impl),
            )
            add(
                f"upsample2d img {res}px",
                (batch, 3, res // 2, res // 2),
                lambda x, impl: upsample2d(x, _FILTER[x.device], impl=impl),
            )
            # D: FIR before the stride-2 3x3 conv, and the 2x down of the 1x1 skip
            add(
                f"upfirdn2d downconv-FIR {res}px",
                (batch, c, res, res),
                lambda x, impl: upfirdn2d(x, _FILTER[x.device], padding=2, impl=impl),
            )
            add(
                f"upfirdn2d down2 skip {res}px",
                (batch, c, res, res),
                lambda x, impl: upfirdn2d(x, _FILTER[x.device], down=2, padding=1, impl=impl),
            )
        res *= 2
    return list(cases.values())


class _FilterCache(dict):
    def __missing__(self, device):
        self[device] = setup_filter([1, 3, 3, 1], device=device)
        return self[device]


_FILTER = _FilterCache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], None], device: torch.device, iters: int, warmup: int) -> dict:
    """Mean time (ms) of `step` and its peak extra memory (MiB, CUDA only)."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    ms = (time.perf_counter() - start) / iters * 1e3
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    return {"time_ms": round(ms, 4), "peak_mib": None if peak is None else round(peak, 2)}


def _ratios(entry: dict) -> dict:
    """ref / cuda and ref_compiled / cuda for time and memory (>1 means the fused kernel wins), and ref / auto
    (what `auto`'s dispatch gains over the reference: it must not fall below 1 beyond the timing noise)."""
    out = {}
    if entry.get("auto") and entry.get("ref"):
        out["ref/auto time"] = round(entry["ref"]["time_ms"] / entry["auto"]["time_ms"], 3)
    base = entry.get("cuda")
    for other in ("ref", "ref_compiled"):
        o = entry.get(other)
        if base and o:
            out[f"{other}/cuda time"] = round(o["time_ms"] / base["time_ms"], 3)
            if base["peak_mib"] and o["peak_mib"] is not None:
                out[f"{other}/cuda memory"] = round(o["peak_mib"] / base["peak_mib"], 3)
    return out


def bench_ops(args, device: torch.device, impls: list[str], on_progress=None) -> list[dict]:
    results = []
    dtype = getattr(torch, args.dtype)
    for case in tqdm(
        op_cases(args.resolution, args.batch, args.channel_base, args.channel_max), desc="ops", file=sys.stderr
    ):
        x = torch.randn(case["shape"], device=device, dtype=dtype)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        entry = {"name": case["name"], "shape": case["shape"]}
        dy = None
        for impl in impls:
            if impl == "ref_compiled" and args.compile_res and case["res"] not in args.compile_res:
                continue
            fn = case["fn"]
            if impl == "ref_compiled":
                torch._dynamo.reset()  # one fresh graph per shape, not a recompile of the last one
                call = torch.compile(lambda x, f=fn: f(x, "ref"), dynamic=False)
            else:
                call = lambda x, f=fn, i=impl: f(x, i)  # noqa: E731
            if dy is None:
                dy = torch.randn_like(call(x).detach())

            def step(call=call, x=x, dy=dy):
                call(x).backward(dy)
                x.grad = None

            try:
                entry[impl] = measure(step, device, args.iters, args.warmup)
            except Exception as exc:  # e.g. torch.compile without a working backend compiler
                entry[impl] = None
                entry[f"{impl} error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        entry["ratios"] = _ratios(entry)
        results.append(entry)
        if on_progress:
            on_progress(results)
    return results


def bench_train_step(args, device: torch.device, impls: list[str], on_progress=None) -> dict | None:
    """One StyleGAN2 G+D step (non-saturating losses, R1 on reals) per impl.

    `ref_compiled` runs G and D under torch.compile, except for the R1 term: torch.compile cannot
    differentiate twice, so R1 goes through the eager reference D.
    """
    try:
        from pbw.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
    except ImportError as exc:
        return {"skipped": f"pbw.models.stylegan2 is not available ({exc})"}
    torch.manual_seed(0)
    kwargs = dict(resolution=args.resolution, channel_base=args.channel_base, channel_max=args.channel_max)
    G, D = StyleGAN2Generator(**kwargs).to(device), StyleGAN2Discriminator(**kwargs).to(device)
    if args.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    z = torch.randn(args.batch, G.z_dim, device=device)
    real = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16, enabled=args.amp
    )

    def step(g, d):
        with autocast:
            loss_g = F.softplus(-d(g(z))).mean()
        loss_g.backward()
        real_ = real.detach().requires_grad_()
        with autocast:
            logits_r1 = D(real_)
            logits_real = logits_r1 if d is D else d(real)
            logits_fake = d(g(z).detach())
        (r1,) = torch.autograd.grad(logits_r1.sum(), real_, create_graph=True)
        loss_d = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean() + r1.square().sum([1, 2, 3]).mean()
        loss_d.backward()
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)

    out = {"resolution": args.resolution, "batch": args.batch, "amp": args.amp}
    for impl in impls:
        compiled = impl == "ref_compiled"
        loader.set_mode("ref" if compiled else impl)
        try:
            torch._dynamo.reset()
            g, d = (torch.compile(G), torch.compile(D)) if compiled else (G, D)
            out[impl] = measure(
                lambda g=g, d=d: step(g, d), device, max(1, args.iters // 4), max(1, min(args.warmup, 2))
            )
        except Exception as exc:  # e.g. torch.compile without a working backend compiler
            out[impl] = None
            out[f"{impl} error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            loader.set_mode(None)
        if on_progress:
            on_progress(out)
    out["ratios"] = _ratios(out)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channel-base", type=int, default=32768)
    p.add_argument("--channel-max", type=int, default=512)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd reference")
    p.add_argument(
        "--compile-res",
        type=int,
        nargs="*",
        default=None,
        help="compile the reference only for the ops of these resolutions (default: all)",
    )
    p.add_argument("--no-ops", action="store_true", help="only the whole training step")
    p.add_argument("--no-train-step", action="store_true")
    p.add_argument("--amp", action="store_true", help="mixed precision in the training step")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda_ok = (
        device.type == "cuda"
        and torch.cuda.is_available()
        and loader.get_mode() != "ref"
        and loader.load_extension() is not None
    )
    impls = (["cuda", "auto"] if cuda_ok else []) + ["ref"] + ([] if args.no_compile else ["ref_compiled"])
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda_ops": "available"
        if cuda_ok
        else (
            "CUDA is unavailable on this device: only the reference paths were measured"
            if device.type != "cuda"
            else f"{loader.ENV_VAR}=ref: only the reference paths were measured"
            if loader.get_mode() == "ref"
            else f"the fused ops did not build: {loader.build_error()}"
        ),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "ops": [],
        "train_step": None,
        "complete": False,
    }

    def save(part, value):  # with --json, the partial results are on disk as they come (a killed run keeps them)
        report[part] = value
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))

    if not args.no_ops:
        save("ops", bench_ops(args, device, impls, lambda r: save("ops", r)))
    if not args.no_train_step:
        save("train_step", bench_train_step(args, device, impls, lambda r: save("train_step", r)))
    report["complete"] = True
    _print_table(report)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return report


def _fmt(m: dict | None) -> str:
    if not m:
        return "-"
    mem = "" if m["peak_mib"] is None else f" {m['peak_mib']:.0f}MiB"
    return f"{m['time_ms']:.3f}ms{mem}"


def _print_table(report: dict) -> None:
    print(f"device: {report['device']}  torch {report['torch']}  cuda_ops: {report['cuda_ops']}")
    rows = list(report["ops"])
    if report["train_step"] and "skipped" not in report["train_step"]:
        rows.append({"name": "G+D training step", **report["train_step"]})
    print(f"{'op':34s} {'cuda':>20s} {'auto':>20s} {'ref':>20s} {'ref_compiled':>20s}  ratios")
    for r in rows:
        ratios = ", ".join(f"{k}={v}" for k, v in r.get("ratios", {}).items())
        print(
            f"{r['name']:34s} {_fmt(r.get('cuda')):>20s} {_fmt(r.get('auto')):>20s} {_fmt(r.get('ref')):>20s} "
            f"{_fmt(r.get('ref_compiled')):>20s}  {ratios}"
        )
    speedups = [r["ratios"]["ref/cuda time"] for r in report["ops"] if "ref/cuda time" in r.get("ratios", {})]
    if speedups:
        geo = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        print(f"fused vs reference: geometric mean speedup {geo:.2f}x, slowest op {min(speedups):.2f}x")


if __name__ == "__main__":
    main()
