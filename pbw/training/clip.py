"""Train or fine-tune an open_clip model contrastively on image-caption batches.

Works with any DataModule whose batches are dicts with ``"image"`` (float [B,3,R,R] in [-1,1])
and ``"caption"`` (list[str]): the synthetic birds (``pbw.data.synthetic``) or CUB with Reed et
al.'s captions. The loss is open_clip's ``ClipLoss``; the trained model can be written as an
open_clip ``local-dir:`` folder (``open_clip_config.json`` + safetensors weights) that
``open_clip.create_model_and_transforms("local-dir:<folder>")`` loads offline.

Small model configurations shipped with pbw (``pbw/semantic/model_configs/*.json``, e.g.
``pbw-mini-clip``: 64 px ViT with 8 px patches) are registered with open_clip on import.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import open_clip
import pytorch_lightning as pl
import torch
from safetensors.torch import save_file

from pbw.semantic.clip import crop_boxes, register_model_configs, resample_boxes

register_model_configs()


def _model_config(model_name: str) -> dict:
    if model_name.startswith("local-dir:"):
        path = Path(model_name[len("local-dir:") :]) / "open_clip_config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a local-dir: CLIP folder needs open_clip_config.json "
                "(write one with CLIPTrainer.save_open_clip)"
            )
        return json.loads(path.read_text())["model_cfg"]
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip model {model_name!r}; choose one of open_clip.list_models() "
            f"(pbw adds {register_model_configs()}) or 'local-dir:<folder>'"
        )
    return cfg


def in_batch_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 retrieval accuracy of a square similarity matrix whose matches are on the diagonal."""
    return (logits.argmax(dim=1) == torch.arange(len(logits), device=logits.device)).float().mean()


class CLIPTrainer(pl.LightningModule):
    """Contrastive training of an open_clip model on ``{"image", "caption"}`` batches.

    Args:
        model_name: an open_clip architecture (built-in, pbw's ``pbw-mini-clip``) or
            ``local-dir:<folder>`` to continue from a saved model.
        pretrained: open_clip weights for a built-in architecture: a tag (downloads) or a local
            checkpoint file. None trains from scratch.
        lr, weight_decay, betas, eps: AdamW settings (no decay on gains, biases, embeddings and
            the logit scale, as in open_clip's training).
        warmup_steps: linear warm-up, then cosine decay to zero over the run.
        augment: in training, the editor's random square crops (``crop_scale``: low and high fraction
            of the side, as `SemanticNet`'s) resampled to the input size, and horizontal flips.
        export_dir: when set, the model is written there as an open_clip ``local-dir:`` folder at
            the end of training.
        export_precision: dtype of the exported weights (``fp16`` halves the file).
    """

    def __init__(
        self,
        model_name: str = "pbw-mini-clip",
        pretrained: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_steps: int = 100,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.7, 0.98),
        export_dir: str | None = None,
        export_precision: Literal["fp32", "fp16"] = "fp32",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = _model_config(model_name)
        try:
            self.model = open_clip.create_model(model_name, pretrained=pretrained, output_dict=True)
        except RuntimeError as err:
            if pretrained and "download" in str(err).lower():
                raise RuntimeError(
                    f"could not get open_clip weights {pretrained!r} for {model_name!r} (no internet?). "
                    "Pass a local checkpoint file as `pretrained`, or a saved folder as "
                    "`model_name: local-dir:<folder>`."
                ) from err
            raise
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.loss = open_clip.ClipLoss()
        pp = self.model.visual.preprocess_cfg
        self.image_size = int(pp["size"] if isinstance(pp["size"], int) else pp["size"][0])
        self.register_buffer("mean", torch.tensor(pp["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pp["std"]).view(1, 3, 1, 1), persistent=False)

    # ---- encoding -------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """Images in [-1,1] [B,3,H,W] -> the model's input size and normalization, resampled as the
        editor shows images to CLIP (`resample_boxes`); `augment`: the editor's random crops
        (`crop_boxes` with ``crop_scale``) and horizontal flips."""
        x = (images.float() + 1) / 2
        n, _, h, w = x.shape
        whole = torch.tensor([0.0, 0.0, w, h], device=x.device).expand(n, 4)
        if augment:
            boxes = crop_boxes(whole, torch.rand(n, 1, 3, device=x.device), self.hparams.crop_scale)[:, 0]
            x = resample_boxes(x, boxes, self.image_size)
            x = torch.where(torch.rand(n, 1, 1, 1, device=x.device) < 0.5, x.flip(-1), x)
        elif h != self.image_size or w != self.image_size:
            x = resample_boxes(x, whole, self.image_size)
        return (x - self.mean) / self.std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalized image embeddings of images in [-1,1]."""
        return self.model.encode_image(self.preprocess(images), normalize=True)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalized text embeddings."""
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True)

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Cosine similarities [B_images, B_texts]."""
        return self.encode_images(images.to(self.device)) @ self.encode_texts(texts).T

    # ---- training -------------------------------------------------------------------------

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        if "caption" not in batch:
            raise KeyError(
                "CLIPTrainer needs batches with a 'caption' list; enable captions in the DataModule "
                "(e.g. CUBDataModule with the text_c10 captions)"
            )
        images = self.preprocess(batch["image"], augment=stage == "train" and self.hparams.augment)
        out = self.model(images, self.tokenizer(batch["caption"]).to(self.device))
        loss = self.loss(out["image_features"], out["text_features"], out["logit_scale"])
        logits = out["image_features"] @ out["text_features"].T
        n = len(images)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n)
        self.log(f"{stage}/image_to_text_acc", in_batch_accuracy(logits), batch_size=n)
        self.log(f"{stage}/text_to_image_acc", in_batch_accuracy(logits.T), batch_size=n)
        if stage == "train":
            self.log("train/logit_scale", out["logit_scale"], batch_size=n)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():  # as open_clip's training: temperature at most 100
            self.model.logit_scale.clamp_(0, math.log(100))

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            exclude = (
                p.ndim < 2 or "embedding" in name or name.endswith(("logit_scale", "logit_bias", "class_embedding"))
            )
            (no_decay if exclude else decay).append(p)
        hp = self.hparams
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total // 2)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule), "interval": "step"},
        }

    # ---- export ---------------------------------------------------------------------------

    def save_open_clip(self, folder: str | Path) -> Path:
        """Write the model as an open_clip ``local-dir:`` folder (config + safetensors weights)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if self.hparams.export_precision == "fp16" else torch.float32
        state = {
            k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in self.model.state_dict().items()
        }
        save_file(state, folder / "open_clip_model.safetensors")
        pp = dict(self.model.visual.preprocess_cfg)
        (folder / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": self.model_cfg, "preprocess_cfg": pp}, indent=2)
        )
        return folder

    def on_fit_end(self) -> None:  # also when a resumed run had nothing left to train
        if self.hparams.export_dir and self.trainer.is_global_zero:
            self.save_open_clip(self.hparams.export_dir)
