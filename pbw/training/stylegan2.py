"""StyleGAN2 training as a LightningModule (manual optimization).

Per training step: one discriminator step (non-saturating logistic loss, lazy R1 every
`r1_interval` steps) and one generator step (non-saturating loss with style mixing, lazy
path-length regularization every `pl_interval` steps), then the EMA update of G. The lazy
regularizers use the learning-rate/beta correction of the paper. ADA augments every image the
discriminator sees and adapts its p toward `ada_target`. EMA, ADA's p, the path-length mean and the
image count are module state, so they are saved in and restored from checkpoints.

Note: with manual optimization Lightning counts each optimizer step, so one iteration is 2 steps of
`trainer.max_steps` / `global_step`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pbw.metrics import GenerationMetrics
from pbw.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from pbw.training.augment import AdaController, AdaptiveAugment
from pbw.training.common import GANModule, ema_beta, update_ema


class StyleGAN2Module(GANModule):
    """Trains a StyleGAN2 generator/discriminator pair on batches {"image": [B, 3, R, R] in [-1, 1]}."""

    family = "stylegan2"

    def __init__(
        self,
        resolution: int = 256,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        conv_clamp: float | None = None,
        g_lr: float = 0.0025,
        d_lr: float = 0.0025,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 1.0,
        r1_interval: int = 16,
        pl_weight: float = 2.0,
        pl_interval: int = 4,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        style_mixing_prob: float = 0.9,
        ema_kimg: float = 10.0,
        ema_rampup: float | None = 0.05,
        augment: bool = True,
        ada_target: float = 0.6,
        ada_interval: int = 4,
        ada_kimg: float = 500.0,
        augment_p: float = 0.0,
        feature_extractor: nn.Module | None = None,
        num_metric_samples: int = 5000,
        grid_size: int = 8,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["feature_extractor"])
        self.generator_kwargs = dict(
            resolution=resolution,
            z_dim=z_dim,
            w_dim=w_dim,
            mapping_layers=mapping_layers,
            channel_base=channel_base,
            channel_max=channel_max,
            conv_clamp=conv_clamp,
        )
        self.discriminator_kwargs = dict(
            resolution=resolution,
            channel_base=channel_base,
            channel_max=channel_max,
            mbstd_group_size=mbstd_group_size,
            conv_clamp=conv_clamp,
        )
        self.generator = StyleGAN2Generator(**self.generator_kwargs)
        self.discriminator = StyleGAN2Discriminator(**self.discriminator_kwargs)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.augment_pipe = AdaptiveAugment(p=augment_p) if augment else None
        self.ada = AdaController(ada_target, ada_interval, ada_kimg) if augment and ada_target is not None else None
        self.register_buffer("pl_mean", torch.zeros([]))
        self.register_buffer(
            "grid_z", torch.randn(grid_size * grid_size, z_dim, generator=torch.Generator().manual_seed(seed))
        )
        self.metrics = GenerationMetrics(feature_extractor) if num_metric_samples > 0 else None
        # Running (sum of sign(D(real)), count) between ADA adjustments, kept on the logits' device. Not a
        # buffer: DDP would overwrite each rank's with rank 0's at every step.
        self._ada_signs = torch.zeros(2)

    # ----------------------------------------------------------------------------------------- setup
    def configure_optimizers(self):
        hp = self.hparams

        def adam(params, lr, interval):
            ratio = interval / (interval + 1) if interval else 1.0  # lazy-regularization correction
            return torch.optim.Adam(params, lr=lr * ratio, betas=(hp.betas[0] ** ratio, hp.betas[1] ** ratio), eps=1e-8)

        return [
            adam(self.generator.parameters(), hp.g_lr, hp.pl_interval if hp.pl_weight > 0 else 0),
            adam(self.discriminator.parameters(), hp.d_lr, hp.r1_interval if hp.r1_gamma > 0 else 0),
        ]

    # ------------------------------------------------------------------------------------- training
    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return self.augment_pipe(images) if self.augment_pipe is not None else images

    def _mapping_with_mixing(self, z: torch.Tensor) -> torch.Tensor:
        """W+ latents, with a second latent taking over the later layers with prob style_mixing_prob."""
        mapping = self.generator.mapping
        ws = mapping(z, update_w_avg=True)
        if self.hparams.style_mixing_prob > 0 and torch.rand([]).item() < self.hparams.style_mixing_prob:
            cutoff = int(torch.randint(1, ws.shape[1], []).item())
            ws[:, cutoff:] = mapping(torch.randn_like(z))[:, cutoff:]
        return ws

    def _generate(self, batch_size: int) -> torch.Tensor:
        z = torch.randn(batch_size, self.hparams.z_dim, device=self.device)
        return self.generator.synthesis(self._mapping_with_mixing(z))

    def _discriminator_step(self, real: torch.Tensor, do_r1: bool) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self._generate(len(real))
        real = real.detach().requires_grad_(do_r1)
        logits_fake = self.discriminator(self._augment(fake))
        logits_real = self.discriminator(self._augment(real))
        loss = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        out = {"loss_d": loss.detach(), "d_real": logits_real.detach().mean(), "d_fake": logits_fake.detach().mean()}
        if do_r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
            r1 = grad.float().square().sum(dim=[1, 2, 3]).mean()
            loss = loss + r1 * (self.hparams.r1_gamma / 2) * self.hparams.r1_interval
            out["r1_penalty"] = r1.detach()
        if self._ada_signs.device != logits_real.device:
            self._ada_signs = self._ada_signs.to(logits_real.device)
        self._ada_signs[0] += logits_real.detach().sign().sum()
        self._ada_signs[1] += len(real)
        return out | {"_loss": loss}

    def _generator_step(self, batch_size: int, do_pl: bool) -> dict[str, torch.Tensor]:
        loss = F.softplus(-self.discriminator(self._augment(self._generate(batch_size)))).mean()
        out = {"loss_g": loss.detach()}
        if do_pl:
            n = max(batch_size // self.hparams.pl_batch_shrink, 1)
            ws = self._mapping_with_mixing(torch.randn(n, self.hparams.z_dim, device=self.device))
            img = self.generator.synthesis(ws)
            noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
            lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()
            self.pl_mean.copy_(self.pl_mean.lerp(lengths.mean().detach(), self.hparams.pl_decay))
            penalty = (lengths - self.pl_mean).square().mean()
            loss = loss + penalty * self.hparams.pl_weight * self.hparams.pl_interval
            out |= {"pl_penalty": penalty.detach(), "pl_mean": self.pl_mean.clone()}
        return out | {"_loss": loss}

    def _step_optimizer(self, optimizer, loss: torch.Tensor, trained: nn.Module) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for p in trained.parameters():  # a NaN from a diverging step must not poison the weights
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0, posinf=1e5, neginf=-1e5)
        optimizer.step()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp = self.hparams
        real = batch["image"]
        batch_size = len(real)
        opt_g, opt_d = self.optimizers()
        step = self._iterations

        d_out = self._discriminator_step(real, do_r1=hp.r1_gamma > 0 and step % hp.r1_interval == 0)
        self._step_optimizer(opt_d, d_out.pop("_loss"), self.discriminator)

        self.discriminator.requires_grad_(False)  # G's loss needs D's input gradients, not its weights
        g_out = self._generator_step(batch_size, do_pl=hp.pl_weight > 0 and step % hp.pl_interval == 0)
        self.discriminator.requires_grad_(True)
        self._step_optimizer(opt_g, g_out.pop("_loss"), self.generator)

        global_batch = batch_size * self.trainer.world_size
        if self.trainer.world_size > 1:  # running statistics are computed per rank: average them
            for stat in (self.generator.mapping.w_avg, self.pl_mean):
                stat.copy_(self.trainer.strategy.reduce(stat, reduce_op="mean"))
        self.count_iteration(global_batch)
        update_ema(self.generator_ema, self.generator, ema_beta(global_batch, self._images, hp.ema_kimg, hp.ema_rampup))
        logs = d_out | g_out
        if self.ada is not None and (step + 1) % self.ada.interval == 0:
            signs = self.trainer.strategy.reduce(self._ada_signs.clone(), reduce_op="sum")
            logs["ada_rt"] = self.ada.adjust(self.augment_pipe.p, signs[0], signs[1], global_batch)
            self._ada_signs.zero_()
        if self.augment_pipe is not None:
            logs["ada_p"] = self.augment_pipe.p.clone()
        self.log_training(logs)

    # ----------------------------------------------------------------------------------- validation
    def fakes_like(self, batch: dict[str, Any]) -> torch.Tensor:
        z = torch.randn(len(batch["image"]), self.hparams.z_dim, device=self.device)
        return self.generator_ema(z, noise_mode="const")

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        images = torch.cat([self.generator_ema(z, noise_mode="const") for z in self.grid_z.split(16)])
        return images, self.hparams.grid_size
