"""Batched separable CMA-ES (sep-CMA-ES, Ros & Hansen 2008) in torch.

Why not the `cma` package: it keeps a full n x n covariance in numpy and asks/tells one candidate
list per problem. The edit latents are large (StyleGAN2 W+ at 256 px: 14 x 512 = 7168 dims; a
BigGAN block-0 feature map: C x 8 x 8, e.g. 65536 dims), so a full covariance (n^2 memory, n^3
eigendecompositions) is out of reach, while a diagonal covariance is O(n) and stays on the GPU.
This class runs B independent problems (the B edit requests) at once: one `ask` gives a
[B, popsize, D] population that the caller evaluates as one batch. `active` restricts each
problem to its own subset of dimensions (e.g. the latent positions inside its mask). With one
random generator per problem, each problem's samples do not depend on the others in the batch.
"""

from __future__ import annotations

import math

import torch


class SepCMAES:
    """Minimize B functions of D variables with a diagonal-covariance CMA-ES.

    mean: [B, D] start points; sigma0: initial step size; active: [B, D] bool (dims to search);
    generator: one for all problems, or a list of B (problem i samples from the i-th alone)."""

    def __init__(
        self,
        mean: torch.Tensor,
        sigma0: float = 0.5,
        popsize: int = 50,
        active: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ):
        if popsize < 2:
            raise ValueError(f"CMA-ES needs a population of at least 2, got {popsize}")
        b, d = mean.shape
        dev, dt = mean.device, mean.dtype
        self.mean = mean.clone()
        self.active = (torch.ones(b, d, dtype=torch.bool, device=dev) if active is None else active.bool()).clone()
        self.act = self.active.to(dt)
        n = self.act.sum(1, keepdim=True).clamp(min=1)  # [B, 1] dimension of each problem
        self.lam, self.generator = popsize, generator
        mu = popsize // 2
        w = math.log((popsize + 1) / 2) - torch.log(torch.arange(1, mu + 1, dtype=dt, device=dev))
        self.weights = w / w.sum()  # [mu]
        self.mueff = float(1 / (self.weights**2).sum())
        me = self.mueff
        self.cs = (me + 2) / (n + me + 5)
        self.ds = 1 + 2 * torch.clamp(torch.sqrt((me - 1) / (n + 1)) - 1, min=0) + self.cs
        self.cc = (4 + me / n) / (n + 4 + 2 * me / n)
        c1 = 2 / ((n + 1.3) ** 2 + me)
        cmu = 2 * (me - 2 + 1 / me) / ((n + 2) ** 2 + me)
        self.c1 = (c1 * (n + 2) / 3).clamp(max=1)  # separable learning-rate boost
        self.cmu = torch.minimum(cmu * (n + 2) / 3, 1 - self.c1)
        self.chin = torch.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
        self.n = n
        self.sigma = torch.full((b, 1), float(sigma0), dtype=dt, device=dev)
        self.diag = self.act.clone()  # diagonal of C (0 on inactive dims)
        self.ps = torch.zeros_like(self.mean)
        self.pc = torch.zeros_like(self.mean)
        self.gen = 0
        self.best_x = self.mean.clone()
        self.best_f = torch.full((b,), float("inf"), dtype=dt, device=dev)
        self._z = None

    def ask(self) -> torch.Tensor:
        """The next population [B, popsize, D]."""
        b, d = self.mean.shape
        per_problem = isinstance(self.generator, list)
        gens = self.generator if per_problem else [self.generator]
        shape = (1 if per_problem else b, self.lam, d)
        z = torch.cat([torch.randn(shape, generator=g, device=self.mean.device, dtype=self.mean.dtype) for g in gens])
        self._z = z * self.act[:, None]
        self._y = self._z * self.diag.sqrt()[:, None]
        return self.mean[:, None] + self.sigma[:, :, None] * self._y

    def tell(self, fitness: torch.Tensor) -> None:
        """Update from the fitness [B, popsize] (lower is better) of the last `ask`."""
        order = fitness.argsort(1)
        mu = len(self.weights)
        idx = order[:, :mu, None].expand(-1, -1, self.mean.shape[1])
        zsel, ysel = self._z.gather(1, idx), self._y.gather(1, idx)
        best = fitness.gather(1, order[:, :1])[:, 0]
        better = best < self.best_f
        cand = self.mean + self.sigma * ysel[:, 0]
        self.best_x = torch.where(better[:, None], cand, self.best_x)
        self.best_f = torch.where(better, best, self.best_f)

        w = self.weights[None, :, None]
        zw, yw = (w * zsel).sum(1), (w * ysel).sum(1)
        self.mean = self.mean + self.sigma * yw
        self.ps = (1 - self.cs) * self.ps + torch.sqrt(self.cs * (2 - self.cs) * self.mueff) * zw
        ps_norm = self.ps.norm(dim=1, keepdim=True)
        self.gen += 1
        hs = (ps_norm / torch.sqrt(1 - (1 - self.cs) ** (2 * self.gen)) < (1.4 + 2 / (self.n + 1)) * self.chin).to(
            self.mean.dtype
        )
        self.pc = (1 - self.cc) * self.pc + hs * torch.sqrt(self.cc * (2 - self.cc) * self.mueff) * yw
        rank_mu = (w * ysel**2).sum(1)
        self.diag = (
            (1 - self.c1 - self.cmu) * self.diag
            + self.c1 * (self.pc**2 + (1 - hs) * self.cc * (2 - self.cc) * self.diag)
            + self.cmu * rank_mu
        ) * self.act
        self.sigma = self.sigma * torch.exp((self.cs / self.ds) * (ps_norm / self.chin - 1))
