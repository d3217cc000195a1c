"""Prototype (2026-12-05): fine-tune the StyleGAN2 state with a second discriminator on the
frozen tiny CLIP's features (vision-aided GAN, Kumari et al., CVPR 2022), watching the bird rate.

The trained D does not rank whole birds above broken ones (discriminator_probe.py: AUC 0.53), while a
linear probe on the tiny CLIP's features does (0.78); a head on those features might pass that on to G.
Per iteration: StyleGAN2's D step (lazy R1, as the trainer), a step of the CLIP head (logistic loss on
real vs fake), then a G step on D's loss plus `--weight` times the head's. The head reads each of the
CLIP's 3 blocks' 8x8 token maps (1x1 conv, 3x3 stride-2 conv, linear; logits summed). The bird rate is
measured on 256 fixed codes (seed 12345) every `--eval_every` iterations. A plain loop, not the
Lightning trainer: a throwaway experiment that, had it worked, would have become a trainer option.

    python -m lab.experiments.vision_aided_finetune --out out/vision_aided --its 3000
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lab.state import load_module
from pbw.data.fresh_birds import EndlessSampler, FreshBirds
from pbw.evaluation.segmenter import bird_rate, load_segmenter
from pbw.semantic.clip import SemanticNet
from pbw.training.common import ema_beta, update_ema


class CLIPHead(nn.Module):
    """A trainable logit on a frozen CLIP's (a `SemanticNet`'s) per-block token maps."""

    def __init__(self, clip: SemanticNet, width: int = 96, levels: int = 3, channels: int = 64):
        super().__init__()
        self.clip = [clip.eval().requires_grad_(False)]  # a list: not a submodule, never trained
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, channels, 1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(channels, channels, 3, 2, 1),
                nn.LeakyReLU(0.2),
                nn.Flatten(),
                nn.Linear(channels * 16, 1),
            )
            for _ in range(levels)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        clip = self.clip[0]
        x = ((images + 1) / 2 - clip.mean) / clip.std
        maps = clip.model.visual.forward_intermediates(x, intermediates_only=True)["image_intermediates"]
        return sum(head(f) for head, f in zip(self.heads, maps, strict=True))


def adam(params, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.0, 0.99), eps=1e-8)


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--its", type=int, default=3000)
    p.add_argument("--weight", type=float, default=1.0, help="the CLIP head's share of G's loss (0: control)")
    p.add_argument("--lr", type=float, default=0.0005)
    p.add_argument("--ema_kimg", type=float, default=10)
    p.add_argument("--eval_every", type=int, default=500)
    a = p.parse_args()
    torch.manual_seed(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    m = load_module()
    G, D, G_ema, hp = m.generator, m.discriminator, m.generator_ema, m.hparams
    head = CLIPHead(SemanticNet("local-dir:pbw/assets/mini/clip", None))
    opt_g, opt_d, opt_h = (
        adam(G.parameters(), a.lr),
        adam(D.parameters(), a.lr * 16 / 17),
        adam(head.parameters(), a.lr),
    )
    data = DataLoader(
        FreshBirds(64, seed=4242, length=10**9), batch_size=16, sampler=EndlessSampler(a.its * 16), num_workers=1
    )
    seg, log, images_seen = load_segmenter(), [], int(m.images_seen)
    codes = torch.randn(256, hp.z_dim, generator=torch.Generator().manual_seed(12345))

    def evaluate(it):
        with torch.no_grad():
            rate = bird_rate(torch.cat([G_ema.eval()(z, noise_mode="const") for z in codes.split(64)]), seg)
        log.append({"iteration": it, "bird_rate": rate["value"], "per_part": rate["per_part"]})
        print(f"iteration {it}: bird rate {rate['value']:.3f} {rate['per_part']}", flush=True)
        (out / "log.json").write_text(json.dumps(log, indent=1))

    evaluate(0)
    start = time.time()
    for it, batch in enumerate(data, 1):
        real = batch["image"]
        with torch.no_grad():
            fake = G.synthesis(G.mapping(torch.randn(len(real), hp.z_dim), update_w_avg=True))
        real.requires_grad_(it % 16 == 1)
        logit_real = D(real)
        loss_d = F.softplus(D(fake)).mean() + F.softplus(-logit_real).mean()
        if real.requires_grad:
            (grad,) = torch.autograd.grad(logit_real.sum(), real, create_graph=True)
            loss_d = loss_d + grad.square().sum([1, 2, 3]).mean() * (hp.r1_gamma / 2) * 16
        step(opt_d, loss_d)
        if a.weight > 0:
            loss_h = F.softplus(head(fake)).mean() + F.softplus(-head(real.detach())).mean()
            step(opt_h, loss_h)
        D.requires_grad_(False)
        head.requires_grad_(False)
        fake = G.synthesis(G.mapping(torch.randn(len(real), hp.z_dim)))
        loss_g = F.softplus(-D(fake)).mean()
        if a.weight > 0:
            loss_g = loss_g + a.weight * F.softplus(-head(fake)).mean()
        step(opt_g, loss_g)
        D.requires_grad_(True)
        head.requires_grad_(True)
        images_seen += len(real)
        update_ema(G_ema, G, ema_beta(len(real), images_seen, a.ema_kimg, None))
        if it % 100 == 0:
            print(
                f"iteration {it} ({time.time() - start:.0f} s): loss_d {loss_d.item():.3f} loss_g {loss_g.item():.3f}",
                flush=True,
            )
        if it % a.eval_every == 0:
            evaluate(it)


if __name__ == "__main__":
    main()
