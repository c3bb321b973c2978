"""The LightningModule that trains one inversion network (Dosovitskiy & Brox, Sect. 2.2).

It is thin on purpose: it takes plain values, builds the representation and the decoder by
name, and saves those values with ``save_hyperparameters()``, so a checkpoint describes
itself and ``featinv.Inverter.from_checkpoint`` rebuilds the networks without Lightning.
Batches arrive as float images in [0, 1] (``InversionDataModule`` converts the loaders'
uint8 on the device); data-fault counts, the reconstruction grid and the end-of-run summary
are callbacks (``featinv.callbacks``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from featinv.callbacks import DataFaultCounter
from featinv.checkpoint import check_resumable, featinv_entry
from featinv.evaluation.metrics import NormalizedErrorMetric, match_size
from featinv.networks import build_networks
from featinv.reliability import NonFiniteLossError, OptionError, require
from featinv.representations import representation_class

log = logging.getLogger(__name__)


class InversionModule(L.LightningModule):
    """Train a decoder f to minimize ``||x - f(Phi(x))||^2`` (MSE, Eq. 3) with Adam.

    Args:
        representation: registered name of Phi (``hog``, ...).
        representation_options: keyword arguments of that representation.
        image_size: side of the training crops.
        decoder_options: keyword arguments of the decoder (widths, bottleneck, ...).
        lr: Adam learning rate (paper: 1e-3).
        betas: Adam betas (paper: 0.9, 0.999).
        weight_decay: Adam weight decay.
        lr_decay_start: fraction of training after which the learning rate decays ("we
            gradually decreased the learning rate towards the end of training").
        lr_final_factor: the learning rate at the end, as a fraction of ``lr`` (linear decay).
        train_encoder: also train Phi's parameters (the autoencoder upper bound, Sect. 4.2).
        max_normalizer_images: validation images kept to compute the normalizer N.
        grid_images: validation images shown in the reconstruction grid.
        nonfinite_loss: ``stop`` raises at the first NaN/inf loss, naming the step, before
            anything from that step is saved; ``skip`` drops the batch (counted in
            ``train/skipped_nonfinite``) and goes on.
        channels_last: keep the decoder's (and AlexNet's) weights and activations in NHWC,
            the layout GPU tensor cores use under ``bf16-mixed``.
        compile_decoder: compile the decoder with ``torch.compile`` (opt-in: the first steps
            are slow while it compiles). Checkpoints are unchanged by it.
        compile_options: keyword arguments of ``torch.compile`` (``mode``, ``backend``, ...).
    """

    def __init__(
        self,
        representation: str = "hog",
        representation_options: dict[str, Any] | None = None,
        image_size: int = 64,
        decoder_options: dict[str, Any] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_decay_start: float = 0.75,
        lr_final_factor: float = 0.1,
        train_encoder: bool = False,
        max_normalizer_images: int = 512,
        grid_images: int = 16,
        nonfinite_loss: Literal["stop", "skip"] = "stop",
        channels_last: bool = False,
        compile_decoder: bool = False,
        compile_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _check_options(dict(locals()))
        self.save_hyperparameters()
        try:
            self.representation, self.decoder = build_networks(
                representation, representation_options, image_size, decoder_options
            )
        except (TypeError, ValueError) as error:  # a bad option of Phi or of the decoder
            raise OptionError(f"model: {error}") from None
        self.representation.requires_grad_(train_encoder)
        self.val_metric = NormalizedErrorMetric(max_normalizer_images)
        self.val_examples: tuple[torch.Tensor, torch.Tensor] | None = None
        self.skipped_nonfinite = 0
        self.decoder_compiled = False
        #: sum and count of this process's training images: the training data's mean image,
        #: the honest constant baseline of the validation report (kept in checkpoints)
        self.train_image_sum: torch.Tensor | None = None
        self.train_image_count = 0

    def configure_callbacks(self) -> list[Callback]:
        # Counting corrupt samples is part of every run, however the Trainer was made (once:
        # a later validate() on the same Trainer keeps the counter it has).
        if any(isinstance(c, DataFaultCounter) for c in self.trainer.callbacks):
            return []
        return [DataFaultCounter()]

    def configure_model(self) -> None:
        # Lightning calls this on the target device before making the optimizer (and again
        # for each later fit/validate): layout changes are idempotent, compiling is done once.
        if self.hparams.channels_last:
            self.decoder.to(memory_format=torch.channels_last)
            self.representation.to(memory_format=torch.channels_last)
        if self.hparams.compile_decoder and not self.decoder_compiled:
            # in place: the state dict keeps its keys, so checkpoints load without Lightning
            self.decoder.compile(**(self.hparams.compile_options or {}))
            self.decoder_compiled = True

    def train(self, mode: bool = True) -> InversionModule:
        # Phi is a fixed function (or, as an autoencoder, a fine-tuned one): its dropout and
        # the like stay off, so the features of an image never depend on the mode.
        super().train(mode)
        self.representation.eval()
        return self

    def _layout(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and tensor.dim() == 4:
            return tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Phi(x) on the device, in float32 even under mixed precision (HOG's binning is exact)."""
        if any(p.dim() == 4 for p in self.representation.parameters()):
            images = self._layout(images)  # convolutional Phi (AlexNet)
        with torch.autocast(images.device.type, enabled=False):
            if self.hparams.train_encoder:
                return self.representation(images.float())
            with torch.no_grad():
                return self.representation(images.float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)

    def _reconstruct(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["image"]
        if not images.is_floating_point():
            raise TypeError(
                f"batches must carry float images in [0, 1], got {images.dtype}: "
                "InversionDataModule converts the loaders' uint8 after the transfer"
            )
        # Representations computed in the loader (SIFT) arrive with the batch.
        features = batch["features"] if "features" in batch else self.features(images)
        return images, self.decoder(self._layout(features))

    def reconstruction_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The training objective on a batch: MSE between images and reconstructions."""
        images, reconstructions = self._reconstruct(batch)
        # A decoder may predict a smaller image than its input (Sect. 2.2): compare at its size.
        target = match_size(images, tuple(reconstructions.shape[-2:]))
        return F.mse_loss(reconstructions.float(), target)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._accumulate_train_images(batch["image"])
        loss = self.reconstruction_loss(batch)
        if not torch.isfinite(loss):
            keys = batch.get("key", [])[:4]
            if self.hparams.nonfinite_loss == "skip":
                self.skipped_nonfinite += 1
                log.warning(
                    "non-finite loss at step %d (batch %s...): batch skipped",
                    self.global_step,
                    keys,
                )
                self.log("train/skipped_nonfinite", float(self.skipped_nonfinite))
                return None  # Lightning skips the optimizer step for this batch
            raise NonFiniteLossError(
                f"the loss is {loss.item()} at global step {self.global_step} (batch keys "
                f"{keys}...). Nothing from this step was saved; resume from the last "
                "checkpoint with --ckpt_path last after lowering the learning rate "
                "(--model.lr) or checking the inputs, or set --model.nonfinite_loss skip to "
                "drop such batches."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def _accumulate_train_images(self, images: torch.Tensor) -> None:
        total = images.detach().sum(dim=0, dtype=torch.float64)
        if self.train_image_sum is None or self.train_image_sum.shape != total.shape:
            self.train_image_sum, self.train_image_count = torch.zeros_like(total), 0
        self.train_image_sum = self.train_image_sum.to(total.device) + total
        self.train_image_count += images.shape[0]

    def train_mean_image(self) -> torch.Tensor | None:
        """The mean of the training images seen so far, over all DDP processes (or ``None``)."""
        if self.train_image_sum is None:
            return None
        reduce = self.trainer.strategy.reduce  # a sum over processes; as is on one device
        total = reduce(self.train_image_sum.to(self.device).clone(), reduce_op="sum")
        count = torch.tensor(float(self.train_image_count), dtype=torch.float64, device=self.device)
        count = reduce(count, reduce_op="sum")
        return (total / count.clamp_min(1)).float()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, reconstructions = self._reconstruct(batch)
        self.val_metric.update(images, reconstructions, batch.get("key"))
        if batch_idx == 0:
            n = self.hparams.grid_images
            self.val_examples = (
                images[:n].detach().cpu(),
                reconstructions[:n].detach().float().cpu(),
            )

    def on_validation_epoch_end(self) -> None:
        results = self.val_metric.compute(self.train_mean_image())
        self.val_metric.reset()
        # torchmetrics has already reduced the states across ranks, so every rank holds the
        # same values; sync_dist only averages equal numbers (and keeps Lightning quiet).
        for name in results:
            self.log(
                f"val/{name}",
                results[name].float(),
                prog_bar=name == "normalized_error",
                sync_dist=True,
            )

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(
            params,
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )
        total = self.trainer.estimated_stepping_batches
        start, final = self.hparams.lr_decay_start, self.hparams.lr_final_factor

        def factor(step: int) -> float:
            # Without a known length (no max_steps, endless loader) the rate stays constant.
            if not math.isfinite(total) or total <= 0:
                return 1.0
            progress = step / total
            if progress <= start:
                return 1.0
            return 1.0 - (1.0 - final) * min((progress - start) / max(1.0 - start, 1e-8), 1.0)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["featinv"] = featinv_entry(self.train_image_sum, self.train_image_count)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, by name, to resume from a checkpoint of other networks."""
        check_resumable(checkpoint, dict(self.hparams))
        entry = checkpoint["featinv"]
        if "train_image_sum" in entry:
            self.train_image_sum = entry["train_image_sum"]
            self.train_image_count = int(entry["train_image_count"])


def _check_options(values: dict[str, Any]) -> None:
    """Refuse impossible model options before anything is built, naming the option."""
    try:
        representation_class(values["representation"])
    except ValueError as error:
        raise OptionError(f"model.representation: {error}") from None
    require(
        values["image_size"] >= 8,
        "model.image_size (the CLI sets it from data.image_size)",
        "at least 8 pixels",
        values["image_size"],
    )
    require(values["lr"] > 0, "model.lr", "positive", values["lr"])
    betas = values["betas"]
    require(
        len(betas) == 2 and all(0 <= b < 1 for b in betas),
        "model.betas",
        "[beta1, beta2] with values in [0, 1)",
        betas,
    )
    require(values["weight_decay"] >= 0, "model.weight_decay", "at least 0", values["weight_decay"])
    for name in ("lr_decay_start", "lr_final_factor"):
        require(0 <= values[name] <= 1, f"model.{name}", "in [0, 1]", values[name])
    require(
        values["max_normalizer_images"] >= 2,
        "model.max_normalizer_images",
        "at least 2 (N averages over pairs)",
        values["max_normalizer_images"],
    )
    require(values["grid_images"] >= 0, "model.grid_images", "at least 0", values["grid_images"])
    require(
        values["nonfinite_loss"] in ("stop", "skip"),
        "model.nonfinite_loss",
        "'stop' or 'skip'",
        values["nonfinite_loss"],
    )
