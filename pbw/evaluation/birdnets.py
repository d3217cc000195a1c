"""What the mini world's small judges share (the yardstick classifier, the part segmenter): the
resolution they work at, the views of drawn birds they train on, and their weight files.

Both nets see every image at `WORK_RESOLUTION` (64 px): a 32 px image is upsampled to it, so one net
judges the 32 px and the 64 px generators alike. They train on fresh birds from
`pbw.data.synthetic.draw_birds`, half of them shown as 64 px birds and half as 32 px birds
(box-downsampled, 8-bit, upsampled again), flipped left-right at random.

Weights are safetensors files stored in fp16 with the net's constructor arguments and whatever the
trainer measured in the file's metadata (`save_net` / `load_net`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pbw.data.synthetic import DrawnBirds

WORK_RESOLUTION = 64


def to_work(images: torch.Tensor, size: int = WORK_RESOLUTION) -> torch.Tensor:
    """Images [B,3,H,W] (any range) resized to size x size (bilinear, antialiased when shrinking)."""
    images = images.float()
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=images.shape[-1] > size
    )


def as_half_resolution(images: torch.Tensor) -> torch.Tensor:
    """64 px images in [-1, 1] as a 32 px render of them would look at 64 px: box-downsampled, rounded
    to 8 bits, upsampled (the view a 32 px generator's image gets through `to_work`)."""
    small = F.avg_pool2d(images, 2)
    small = torch.round((small + 1) * 127.5) / 127.5 - 1
    return to_work(small, images.shape[-1])


def conv_block(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv, GroupNorm (the same in train and eval mode, so a net inside a trainer never drifts), SiLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2 if stride == 1 else 1),
        nn.GroupNorm(min(8, c_out // 4), c_out),
        nn.SiLU(),
    )


# ---------------------------------------------------------------------------------------------- files


def save_net(net: nn.Module, path: str | Path, config: dict, info: dict | None = None) -> int:
    """Write `net`'s weights (fp16) with its constructor `config` and measured `info`; returns bytes."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(config), "info": json.dumps(info or {})})
    return path.stat().st_size


def load_net(factory: Callable[..., nn.Module], path: str | Path) -> tuple[nn.Module, dict]:
    """(net built by `factory(**config)` with the file's weights in fp32, eval mode, frozen; info)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"net weights {path} not found")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    net = factory(**json.loads(meta.get("config", "{}")))
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return net.eval().requires_grad_(False), json.loads(meta.get("info", "{}"))


# ------------------------------------------------------------------------------------------- training


class BirdBatches:
    """Random minibatches of drawn birds, augmented as the nets train on them: flipped left-right
    (the birds face both ways) and, with probability `half_prob`, shown as 32 px birds.

    Yields (images [B,3,64,64] in [-1,1], part maps int64 [B,64,64], species [B], part colors [B,5])."""

    def __init__(self, birds: DrawnBirds, batch_size: int, seed: int = 0, half_prob: float = 0.5):
        if birds.images.shape[1] != WORK_RESOLUTION:
            raise ValueError(f"train on {WORK_RESOLUTION} px birds, got {birds.images.shape[1]} px")
        self.images = birds.tensors()
        self.maps = torch.from_numpy(birds.part_maps.astype(np.int64))
        self.species = torch.from_numpy(birds.species)
        self.colors = torch.from_numpy(birds.part_colors)
        self.batch_size, self.half_prob = batch_size, half_prob
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            order = torch.randperm(len(self.images), generator=self.gen)
            for i in range(0, len(order) - self.batch_size + 1, self.batch_size):
                idx = order[i : i + self.batch_size]
                x, m = self.images[idx], self.maps[idx]
                flip = torch.rand(len(idx), generator=self.gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                m = torch.where(flip[:, None, None], m.flip(-1), m)
                half = torch.rand(len(idx), generator=self.gen) < self.half_prob
                if half.any():
                    x = x.clone()
                    x[half] = as_half_resolution(x[half])
                yield x, m, self.species[idx], self.colors[idx]


def train_loop(
    net: nn.Module,
    batches: Iterator,
    loss_fn: Callable,
    steps: int,
    lr: float,
    log_every: int = 100,
    log: Callable[[str], None] = print,
) -> float:
    """AdamW for `steps` steps of `loss_fn(net, batch) -> (loss, logs)`, the learning rate warming up
    over the first 5% of the steps, then falling to 0 along a cosine; returns the seconds it took."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(
            (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, steps - warmup))))
        ),
    )
    net.train()
    t0 = time.perf_counter()
    running: dict[str, float] = {}
    for step, batch in zip(range(steps), batches, strict=False):
        loss, logs = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for k, v in logs.items():
            running[k] = running.get(k, 0.0) + float(v)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            log(
                f"step {step + 1}/{steps} ({time.perf_counter() - t0:.0f} s): "
                + ", ".join(f"{k} {v / n:.3f}" for k, v in running.items())
            )
            running = {}
    net.eval()
    return time.perf_counter() - t0


def batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """`fn` over `images` in chunks, without gradients, concatenated."""
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def accuracy_entry(hits: torch.Tensor | np.ndarray) -> dict:
    """{"value", "ci95" (Wilson), "n"} of a boolean array."""
    from pbw.evaluation.stats import wilson_interval

    hits = np.asarray(hits, bool).ravel()
    n, k = len(hits), int(hits.sum())
    return {"value": k / n if n else math.nan, "ci95": list(wilson_interval(k, n)), "n": n}
