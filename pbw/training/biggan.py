"""BigGAN training as a LightningModule (manual optimization), after Brock et al. (2019).

Per training step (one *iteration*): `d_steps` discriminator steps, then one generator step, then
the EMA update of G. Each step accumulates `accumulate` micro-batches before its optimizer step, so
the effective batch is `accumulate` x the micro-batch. The real batch from the data loader is split
into `d_steps` x `accumulate` micro-batches, each D micro-step taking its own slice (as in the
authors' code): set the loader's batch size to micro-batch x d_steps x accumulate. Fake images use
uniformly drawn classes. Losses are the hinge losses; G gets the modified orthogonal
regularization (`g_ortho`, the shared class embedding excluded). The EMA of G copies G until
iteration `ema_start`, then decays with `ema_decay`.

With manual optimization Lightning counts each optimizer step, so one iteration is
`d_steps + 1` steps of `trainer.max_steps` / `global_step`.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.strategies import ParallelStrategy
from torch import nn

from pbw.metrics import GenerationMetrics
from pbw.models.biggan import BigGANDiscriminator, BigGANGenerator
from pbw.training.common import GANModule, update_ema


def hinge_loss_d(scores_real: torch.Tensor, scores_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's hinge losses: mean(relu(1 - D(real))), mean(relu(1 + D(fake)))."""
    return F.relu(1 - scores_real.float()).mean(), F.relu(1 + scores_fake.float()).mean()


def hinge_loss_g(scores_fake: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss: -mean(D(G(z)))."""
    return -scores_fake.float().mean()


def orthogonal_penalty(params: list[nn.Parameter]) -> torch.Tensor:
    """BigGAN's modified orthogonal regularization: sum over weights of ||W W^T * (1 - I)||_F^2 (W flattened
    to [out, -1]), computed in float32. Its gradient, halved, is the authors' code's `ortho` update."""
    with torch.autocast(params[0].device.type, enabled=False):
        total = torch.zeros((), device=params[0].device)
        for p in params:
            w = p.float().flatten(1)
            gram = w @ w.t()
            total = total + (gram - torch.diag_embed(torch.diagonal(gram))).square().sum()
    return total


class BigGANModule(GANModule):
    """Trains a class-conditional BigGAN on batches {"image": [B, 3, R, R] in [-1, 1], "label": int64 [B]}.

    Architecture arguments are those of :class:`~pbw.models.biggan.BigGANGenerator` (the
    discriminator shares `resolution`, `ch`, `n_classes`, `sn_eps`). `n_classes` must equal the
    data's number of classes (e.g. 365 for Places365, k for a k-class subset).
    """

    family = "biggan"

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 96,
        n_classes: int = 365,
        dim_z: int = 120,
        shared_dim: int = 128,
        g_attention: list[int] | int | None = 64,
        d_attention: list[int] | int | None = 64,
        bn_eps: float = 1e-5,
        sn_eps: float = 1e-6,
        num_sv_itrs: int = 1,
        g_lr: float = 5e-5,
        d_lr: float = 2e-4,
        betas: tuple[float, float] = (0.0, 0.999),
        adam_eps: float = 1e-6,
        d_steps: int = 2,
        accumulate: int = 1,
        g_ortho: float = 1e-4,
        ema_decay: float = 0.9999,
        ema_start: int = 20000,
        feature_extractor: nn.Module | None = None,
        inception_score: bool = True,
        num_metric_samples: int = 5000,
        grid_rows: int = 8,
        grid_columns: int = 8,
        seed: int = 0,
    ):
        super().__init__()
        if d_steps < 1 or accumulate < 1:
            raise ValueError(f"d_steps and accumulate must be >= 1, got {d_steps} and {accumulate}")
        self.save_hyperparameters(ignore=["feature_extractor"])
        arch = dict(resolution=resolution, ch=ch, n_classes=n_classes, sn_eps=sn_eps, num_sv_itrs=num_sv_itrs)
        # Constructor kwargs for rebuilding the networks from a checkpoint (weights follow, so no init).
        self.generator_kwargs = dict(
            arch, dim_z=dim_z, shared_dim=shared_dim, attention=_as_list(g_attention), bn_eps=bn_eps, init="none"
        )
        self.discriminator_kwargs = dict(arch, attention=_as_list(d_attention), init="none")
        self.generator = BigGANGenerator(**{**self.generator_kwargs, "init": "ortho"})
        self.discriminator = BigGANDiscriminator(**{**self.discriminator_kwargs, "init": "ortho"})
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        rows = min(grid_rows, n_classes)
        grid_classes = torch.linspace(0, n_classes - 1, rows).round().long().repeat_interleave(grid_columns)
        grid = self.generator.sample(len(grid_classes), seed=seed, classes=grid_classes)
        self.register_buffer("grid_z", grid["z"])
        self.register_buffer("grid_class", grid["class"])
        self.metrics = (
            GenerationMetrics(feature_extractor, inception_score=inception_score) if num_metric_samples > 0 else None
        )

    # ----------------------------------------------------------------------------------------- setup
    def configure_optimizers(self):
        hp = self.hparams
        betas = (float(hp.betas[0]), float(hp.betas[1]))
        return [
            torch.optim.Adam(self.generator.parameters(), lr=hp.g_lr, betas=betas, eps=hp.adam_eps),
            torch.optim.Adam(self.discriminator.parameters(), lr=hp.d_lr, betas=betas, eps=hp.adam_eps),
        ]

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        n_data = getattr(data, "num_classes", None)
        if n_data is not None and n_data != self.hparams.n_classes:
            raise ValueError(
                f"the data has {n_data} classes but the model was built for n_classes="
                f"{self.hparams.n_classes}; set model.init_args.n_classes: {n_data}"
            )
        super().on_fit_start()

    # ------------------------------------------------------------------------------------- training
    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.generator.dim_z, device=self.device)
        return z, torch.randint(0, self.hparams.n_classes, (n,), device=self.device)

    def _sync_context(self, last_micro_batch: bool):
        """No gradient all-reduce on accumulation micro-batches before the last one."""
        strategy = self.trainer.strategy
        if last_micro_batch or not isinstance(strategy, ParallelStrategy):
            return nullcontext()
        return strategy.block_backward_sync()

    def _discriminator_steps(
        self, reals: tuple[torch.Tensor, ...], labels: tuple[torch.Tensor, ...], optimizer
    ) -> dict[str, torch.Tensor]:
        hp = self.hparams
        logs: dict[str, torch.Tensor] = {}
        for step in range(hp.d_steps):
            optimizer.zero_grad(set_to_none=True)
            for k in range(hp.accumulate):
                real, y_real = reals[step * hp.accumulate + k], labels[step * hp.accumulate + k]
                z, y_fake = self._noise(len(real))
                with torch.no_grad():
                    fake = self.generator(z, y_fake)
                scores = self.discriminator(torch.cat([fake, real]), torch.cat([y_fake, y_real]))
                scores_fake, scores_real = scores.split([len(fake), len(real)])
                loss_real, loss_fake = hinge_loss_d(scores_real, scores_fake)
                with self._sync_context(k == hp.accumulate - 1):
                    self.manual_backward((loss_real + loss_fake) / hp.accumulate)
            optimizer.step()
        logs.update(
            loss_d_real=loss_real.detach(),
            loss_d_fake=loss_fake.detach(),
            loss_d=(loss_real + loss_fake).detach(),
            d_real=scores_real.detach().float().mean(),
            d_fake=scores_fake.detach().float().mean(),
        )
        return logs

    def _generator_step(self, micro_batch: int, optimizer) -> dict[str, torch.Tensor]:
        hp = self.hparams
        optimizer.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)  # G's loss needs D's input gradients, not its weights
        logs: dict[str, torch.Tensor] = {}
        for k in range(hp.accumulate):
            z, y = self._noise(micro_batch)
            loss = hinge_loss_g(self.discriminator(self.generator(z, y), y))
            logs["loss_g"] = loss.detach()
            total = loss / hp.accumulate
            if hp.g_ortho > 0 and k == hp.accumulate - 1:
                params = [
                    p for name, p in self.generator.named_parameters() if p.ndim >= 2 and not name.startswith("shared.")
                ]
                penalty = orthogonal_penalty(params)
                total = total + 0.5 * hp.g_ortho * penalty
                logs["ortho_penalty"] = penalty.detach()
            with self._sync_context(k == hp.accumulate - 1):
                self.manual_backward(total)
        self.discriminator.requires_grad_(True)
        optimizer.step()
        return logs

    def _average_generator_statistics(self) -> None:
        """Average G's batch-norm running statistics over the ranks (each saw its own batch)."""
        if self.trainer.world_size == 1:
            return
        bufs = [b for name, b in self.generator.named_buffers() if name.endswith(("stored_mean", "stored_var"))]
        flat = self.trainer.strategy.reduce(torch.cat([b.flatten() for b in bufs]), reduce_op="mean")
        for b, v in zip(bufs, flat.split([b.numel() for b in bufs]), strict=True):
            b.copy_(v.view_as(b))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp = self.hparams
        images, labels = batch["image"], batch["label"]
        chunks = hp.d_steps * hp.accumulate
        if len(images) % chunks:
            raise ValueError(
                f"the batch of {len(images)} images does not split into d_steps x accumulate = "
                f"{chunks} equal micro-batches; set data.init_args.batch_size to a multiple of {chunks}"
            )
        reals, ys = images.chunk(chunks), labels.chunk(chunks)
        opt_g, opt_d = self.optimizers()

        logs = self._discriminator_steps(reals, ys, opt_d)
        logs |= self._generator_step(len(reals[0]), opt_g)

        with torch.no_grad():
            self._average_generator_statistics()
        self.count_iteration(len(images) * self.trainer.world_size)
        update_ema(self.generator_ema, self.generator, 0.0 if self._iterations <= hp.ema_start else hp.ema_decay)
        self.log_training(logs)

    # ----------------------------------------------------------------------------------- validation
    def fakes_like(self, batch: dict[str, Any]) -> torch.Tensor:
        z = torch.randn(len(batch["image"]), self.generator.dim_z, device=self.device)
        return self.generator_ema(z, batch["label"])  # the real batch's classes

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        images = torch.cat(
            [self.generator_ema(z, y) for z, y in zip(self.grid_z.split(16), self.grid_class.split(16), strict=True)]
        )
        return images, self.hparams.grid_columns  # one row per class


def _as_list(attention: list[int] | int | None) -> list[int]:
    if attention is None:
        return []
    return [int(attention)] if isinstance(attention, int) else [int(a) for a in attention]
