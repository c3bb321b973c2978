"""The LightningModule that trains one inversion network (Dosovitskiy & Brox, Sect. 2.2).

It is thin on purpose: it takes plain values, builds the representation and the decoder by
name, and saves those values with ``save_hyperparameters()``, so a checkpoint describes
itself and ``featinv.Inverter.from_checkpoint`` rebuilds the networks without Lightning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from featinv.data.images import pixels_to_float
from featinv.evaluation import NormalizedErrorMetric, match_size
from featinv.figures import comparison_grid
from featinv.networks import CHECKPOINT_FORMAT, build_networks
from featinv.reliability import NonFiniteLossError

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
        nonfinite_loss: ``"stop"`` (default) raises at the first NaN/inf loss, naming the step,
            before anything from that step is saved; ``"skip"`` drops the batch (counted in
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
        nonfinite_loss: str = "stop",
        channels_last: bool = False,
        compile_decoder: bool = False,
        compile_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.representation, self.decoder = build_networks(
            representation, representation_options, image_size, decoder_options
        )
        self.representation.requires_grad_(train_encoder)
        self.val_metric = NormalizedErrorMetric(max_normalizer_images)
        self.val_examples: tuple[torch.Tensor, torch.Tensor] | None = None
        if nonfinite_loss not in ("stop", "skip"):
            raise ValueError(f"nonfinite_loss must be 'stop' or 'skip', got {nonfinite_loss!r}")
        self.skipped_nonfinite = 0
        self.decoder_compiled = False
        #: stage -> worker -> (corrupt samples skipped, shard errors), each worker's latest count
        self.data_faults: dict[str, dict[int, tuple[int, int]]] = {"train": {}, "val": {}}
        #: sum and count of this process's training images: the training data's mean image,
        #: the honest constant baseline of the validation report (kept in checkpoints)
        self.train_image_sum: torch.Tensor | None = None
        self.train_image_count = 0

    def _accumulate_train_images(self, pixels: torch.Tensor) -> None:
        total = pixels.sum(dim=0, dtype=torch.float64) / (
            255.0 if pixels.dtype == torch.uint8 else 1.0
        )
        if self.train_image_sum is None or self.train_image_sum.shape != total.shape:
            self.train_image_sum, self.train_image_count = torch.zeros_like(total), 0
        self.train_image_sum = self.train_image_sum.to(total.device) + total
        self.train_image_count += pixels.shape[0]

    def train_mean_image(self) -> torch.Tensor | None:
        """The mean of the training images seen so far, over all DDP processes (or ``None``)."""
        if self.train_image_sum is None:
            return None
        total = self.train_image_sum.to(self.device)
        count = torch.tensor(float(self.train_image_count), dtype=torch.float64, device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total.clone(), reduce_op="sum")
            count = self.trainer.strategy.reduce(count.clone(), reduce_op="sum")
        return (total / count.clamp_min(1)).float()

    def _track_faults(self, batch: dict[str, Any], stage: str) -> None:
        if "skipped" not in batch:
            return
        seen = self.data_faults[stage]
        seen[int(batch.get("worker", 0))] = (
            int(batch["skipped"]),
            int(batch.get("shard_errors", 0)),
        )

    def _log_faults(self, stage: str) -> None:
        """Log the data faults counted so far, summed over loader workers and DDP ranks."""
        seen = self.data_faults[stage].values()
        for name, count in (
            ("skipped_samples", sum(s for s, _ in seen)),
            ("shard_errors", sum(e for _, e in seen)),
        ):
            # every rank logs its own count; sync_dist sums them (each rank reads other shards)
            self.log(f"{stage}/{name}", float(count), reduce_fx="sum", sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self._log_faults("train")

    def on_validation_epoch_start(self) -> None:
        self.data_faults["val"] = {}  # each validation pass counts from zero

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

    def _layout(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and tensor.dim() == 4:
            return tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def train(self, mode: bool = True) -> InversionModule:
        # Phi is a fixed function (or, as an autoencoder, a fine-tuned one): its dropout and
        # the like stay off, so the features of an image never depend on the mode.
        super().train(mode)
        self.representation.eval()
        return self

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
        images = pixels_to_float(batch["image"])  # loaders ship uint8
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
        self._track_faults(batch, "train")
        self._accumulate_train_images(batch["image"])
        loss = self.reconstruction_loss(batch)
        if not torch.isfinite(loss):
            step = self.global_step if self._trainer is not None else batch_idx
            keys = batch.get("key", [])[:4]
            if self.hparams.nonfinite_loss == "skip":
                self.skipped_nonfinite += 1
                log.warning("non-finite loss at step %d (batch %s...): batch skipped", step, keys)
                self.log("train/skipped_nonfinite", float(self.skipped_nonfinite))
                return None  # Lightning skips the optimizer step for this batch
            raise NonFiniteLossError(
                f"the loss is {loss.item()} at global step {step} (batch keys {keys}...). "
                "Nothing from this step was saved; resume from the last checkpoint with "
                "--ckpt_path last after lowering the learning rate (--model.lr) or checking "
                "the inputs, or set --model.nonfinite_loss skip to drop such batches."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        if self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._track_faults(batch, "val")
        images, reconstructions = self._reconstruct(batch)
        self.val_metric.update(images, reconstructions, batch.get("key"))
        if batch_idx == 0:
            n = self.hparams.grid_images
            self.val_examples = (
                images[:n].detach().cpu(),
                reconstructions[:n].detach().float().cpu(),
            )

    def on_validation_epoch_end(self) -> None:
        self._log_faults("val")
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
        total = (
            self.trainer.estimated_stepping_batches if self._trainer is not None else float("inf")
        )
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
        checkpoint["featinv"] = {"format": CHECKPOINT_FORMAT}
        if self.train_image_sum is not None:
            checkpoint["featinv"]["train_image_sum"] = self.train_image_sum.cpu()
            checkpoint["featinv"]["train_image_count"] = self.train_image_count

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, by name, to resume from a checkpoint of another representation."""
        if "featinv" not in checkpoint:
            raise ValueError("not a featinv checkpoint (no 'featinv' entry): cannot resume from it")
        if "train_image_sum" in checkpoint["featinv"]:
            self.train_image_sum = checkpoint["featinv"]["train_image_sum"]
            self.train_image_count = int(checkpoint["featinv"]["train_image_count"])
        theirs = checkpoint.get("hyper_parameters", {})
        for key in ("representation", "representation_options", "image_size", "decoder_options"):
            if theirs.get(key) != self.hparams.get(key):
                raise ValueError(
                    f"this checkpoint was trained with {key}={theirs.get(key)!r}, the run is "
                    f"configured with {key}={self.hparams.get(key)!r}: resume with the config "
                    "the checkpoint was trained with (its config.yaml), or start a new run"
                )


class ReconstructionGrid(Callback):
    """After each validation, write ``val_grid.png`` (original | reconstruction) and log it.

    The PNG goes next to the checkpoints; with a wandb logger the grid is also logged as an
    image, so runs can be compared by eye.
    """

    def __init__(self, filename: str = "val_grid.png") -> None:
        self.filename = filename
        self.last_path: Path | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples = getattr(pl_module, "val_examples", None)
        if examples is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        grid = comparison_grid(examples, ["original", "reconstruction"])
        folder = (
            Path(trainer.checkpoint_callback.dirpath or trainer.default_root_dir)
            if trainer.checkpoint_callback
            else Path(trainer.default_root_dir)
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.last_path = folder / self.filename
        grid.save(self.last_path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image("val/reconstructions", [grid], step=trainer.global_step)
