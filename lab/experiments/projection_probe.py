"""Can the StyleGAN2 state draw whole birds at all? (2026-12-05.)

Projects 128 real birds (world 300) into the generator's W and W+ (Adam on the latent, pixel MSE, from
the mean w) and prints the bird rate of the projections beside that of the real birds: if the
projections are whole birds, the synthesis network can draw them and what it samples is the problem;
if not, its capacity is. Run from the repository root:

    python -m lab.experiments.projection_probe [--steps 300]
"""

import argparse

import torch
import torch.nn.functional as F

from lab.state import load_module
from pbw.data.synthetic import draw_birds
from pbw.evaluation.segmenter import bird_rate, load_segmenter


def project(G, targets: torch.Tensor, plus: bool, steps: int, lr: float = 0.05) -> tuple[torch.Tensor, float]:
    """The images the latents fitted to `targets` draw, and the last step's pixel MSE."""
    n_ws = G.synthesis.num_ws
    w = G.mapping.w_avg.detach().clone()[None, None].repeat(len(targets), n_ws if plus else 1, 1).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        image = G.synthesis(w if plus else w.expand(-1, n_ws, -1), noise_mode="const")
        loss = F.mse_loss(image, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return G.synthesis(w if plus else w.expand(-1, n_ws, -1), noise_mode="const"), loss.item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n", type=int, default=128)
    a = p.parse_args()
    G = load_module().generator_ema.requires_grad_(False)
    seg = load_segmenter()
    real = draw_birds(a.n, 64, seed=300).tensors()
    print(f"real birds: bird rate {bird_rate(real, seg)['value']:.3f}")
    for plus in (False, True):
        images, mse = project(G, real, plus, a.steps)
        rate = bird_rate(images, seg)
        print(
            f"projected into {'W+' if plus else 'W'} ({a.steps} steps, final MSE {mse:.4f}): bird rate "
            f"{rate['value']:.3f} [{rate['ci95'][0]:.2f}, {rate['ci95'][1]:.2f}], per part {rate['per_part']}"
        )


if __name__ == "__main__":
    main()
