"""The LightningModule that trains one inversion network (Dosovitskiy & Brox, Sect. 2.2).

The objective is MSE by default (CVPR 2016, Eq. 3); ``loss`` adds DeePSiM's feature and
adversarial terms (NIPS 2016, ``featinv.losses``). With an adversarial term the module
optimizes manually: a discriminator step, then a decoder step, each with its own Adam
(``featinv.training.adversarial``).

It is thin on purpose: it takes plain values, builds the representation and the decoder by
name, and saves those values with ``save_hyperparameters()``, so a checkpoint describes
itself and ``featinv.Inverter.from_checkpoint`` rebuilds the networks without Lightning.
Batches arrive as float images in [0, 1] (``InversionDataModule`` converts the loaders'
uint8 on the device); data-fault counts, the reconstruction grid and the end-of-run summary
are callbacks (``featinv.training.callbacks``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torchmetrics import MeanMetric

from featinv.checkpoint import check_resumable, featinv_entry
from featinv.decoders import complete_decoder_options
from featinv.losses import (
    LossSettings,
    feature_loss,
    generator_adversarial_loss,
    loss_networks,
)
from featinv.metrics import NormalizedErrorMetric, SharpnessMetric, feature_error
from featinv.networks import build_networks
from featinv.ops import match_size
from featinv.reliability import NoDataError, NonFiniteLossError, OptionError
from featinv.training.adversarial import adversarial_step, allow_unused_parameters
from featinv.training.callbacks import DataFaultCounter
from featinv.training.options import (
    apply_resumed_changes,
    check_model_options,
    linear_decay,
    representation_image_size,
)

log = logging.getLogger(__name__)


class InversionModule(L.LightningModule):
    """Train a decoder f to minimize ``||x - f(Phi(x))||^2`` (MSE, Eq. 3) with Adam, plus
    DeePSiM's feature and adversarial losses when ``loss`` weighs them.

    Args:
        representation: registered name of Phi (``hog``, ...).
        representation_options: keyword arguments of that representation.
        image_size: side of the training crops; ``None``: the representation's own (64, or 128
            px for a layer whose map is narrower than 8 at 64).
        decoder_options: keyword arguments of the decoder (widths, bottleneck, ...).
        lr: Adam learning rate (paper: 1e-3).
        betas: Adam betas; ``None``: the representation's (``Representation.adam_betas``):
            the paper's 0.9, 0.999, and 0.9, 0.99 on a network's features.
        weight_decay: Adam weight decay.
        lr_decay_start: fraction of training after which the learning rate decays ("we
            gradually decreased the learning rate towards the end of training").
        lr_final_factor: the learning rate at the end, as a fraction of ``lr`` (linear decay).
        lr_warmup_steps: steps over which the learning rate rises linearly to ``lr`` (not in
            the paper; keeps Adam's first steps on a trained network's features stable).
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
        loss: the weights of the loss terms and their parts (``featinv.losses.LossSettings``):
            ``{image: 1.0, feature: 0.0, comparator: null, adversarial: 0.0,
            discriminator: {...}}``, every key optional; the default is MSE alone.
    """

    def __init__(
        self,
        representation: str = "hog",
        representation_options: dict[str, Any] | None = None,
        image_size: int | None = 64,
        decoder_options: dict[str, Any] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] | None = None,
        weight_decay: float = 0.0,
        lr_decay_start: float = 0.75,
        lr_final_factor: float = 0.1,
        lr_warmup_steps: int = 100,
        train_encoder: bool = False,
        max_normalizer_images: int = 512,
        grid_images: int = 16,
        nonfinite_loss: Literal["stop", "skip"] = "stop",
        channels_last: bool = False,
        compile_decoder: bool = False,
        compile_options: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if image_size is None:  # recorded as resolved, so the file says what it trained at
            image_size = representation_image_size(representation, representation_options)
        check_model_options(dict(locals()))
        self.save_hyperparameters()
        self.hparams["image_size"] = image_size  # as resolved (LightningCLI saves its config)
        try:
            self.representation, self.decoder = build_networks(
                representation, representation_options, image_size, decoder_options
            )
        except (TypeError, ValueError) as error:  # a bad option of Phi or of the decoder
            raise OptionError(f"model: {error}") from None
        # The decoder's every option is recorded: it rebuilds the same under later defaults.
        self.hparams["decoder_options"] = complete_decoder_options(
            self.representation, image_size, decoder_options
        )
        if betas is None:  # recorded as used, so a file says what trained it
            self.hparams["betas"] = tuple(self.representation.adam_betas)
        self.representation.requires_grad_(train_encoder)
        self.losses = LossSettings.from_options(loss)
        #: C of the feature loss when it is not Phi (registered: its weights are saved), and
        #: the discriminator of the adversarial loss; None when their terms are off
        self.comparator, self.discriminator = loss_networks(
            self.losses, self.representation, image_size, train_encoder
        )
        self.automatic_optimization = self.discriminator is None
        self.discriminator_pauses = 0
        self.val_metric = NormalizedErrorMetric(max_normalizer_images)
        self.val_feature_error = MeanMetric()
        self.val_sharpness = SharpnessMetric()
        self.val_examples: tuple[torch.Tensor, torch.Tensor] | None = None
        self.skipped_nonfinite = 0
        self.decoder_compiled = False
        #: sum and count of this process's training images: the training data's mean image,
        #: the honest constant baseline of the validation report (kept in checkpoints)
        self.train_image_sum: torch.Tensor | None = None
        self.train_image_count = 0
        #: the hyper-parameters of the checkpoint a run resumes from, until training starts
        self.resumed_settings: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        if self.discriminator is not None:
            allow_unused_parameters(self.trainer.strategy)

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
        if self.comparator is not None:
            self.comparator.eval()
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

    def reconstruct_batch(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, their features and their reconstructions."""
        images = batch["image"]
        if not images.is_floating_point():
            raise TypeError(
                f"batches must carry float images in [0, 1], got {images.dtype}: "
                "InversionDataModule converts the loaders' uint8 after the transfer"
            )
        # Representations computed in the loader (SIFT) arrive with the batch.
        features = batch["features"] if "features" in batch else self.features(images)
        return images, features, self.decoder(self._layout(features))

    def loss_terms(
        self,
        images: torch.Tensor,
        features: torch.Tensor,
        reconstructions: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The decoder's weighted loss terms on a batch (only those with a positive weight)."""
        # A decoder may predict a smaller image than its input (Sect. 2.2): compare at its size.
        target = match_size(images, tuple(reconstructions.shape[-2:]))
        terms = {}
        if self.losses.image > 0:
            terms["image"] = F.mse_loss(reconstructions.float(), target)
        if self.losses.feature > 0:
            comparator = self.comparator or self.representation
            # C sees both at the input's size, as Phi was computed
            full = match_size(reconstructions, tuple(images.shape[-2:]))
            terms["feature"] = feature_loss(comparator, full, images)
        if self.discriminator is not None:
            terms["adversarial"] = generator_adversarial_loss(
                self.discriminator(reconstructions.float(), features.float())
            )
        return terms

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_k w_k L_k`` over the terms."""
        return sum(getattr(self.losses, name) * value for name, value in terms.items())

    def reconstruction_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The decoder's training objective on a batch (MSE alone by default)."""
        images, features, reconstructions = self.reconstruct_batch(batch)
        return self.weighted(self.loss_terms(images, features, reconstructions))

    def log_terms(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size)

    def skip_nonfinite(self, loss: torch.Tensor, batch: dict[str, Any], network: str) -> bool:
        """True when ``loss`` is NaN/inf and the batch is to be skipped; raises for ``stop``."""
        if torch.isfinite(loss):
            return False
        keys = batch.get("key", [])[:4]
        if self.hparams.nonfinite_loss == "skip":
            self.skipped_nonfinite += 1
            log.warning(
                "non-finite %s loss at step %d (batch %s...): skipped",
                network,
                self.global_step,
                keys,
            )
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite))
            return True
        raise NonFiniteLossError(
            f"the {network} loss is {loss.item()} at global step {self.global_step} (batch "
            f"keys {keys}...). Nothing from this step was saved; resume from the last "
            "checkpoint with --ckpt_path last after lowering the learning rate "
            "(--model.lr) or checking the inputs, or set --model.nonfinite_loss skip to "
            "drop such batches."
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._accumulate_train_images(batch["image"])
        if not self.automatic_optimization:
            return adversarial_step(self, batch)
        images, features, reconstructions = self.reconstruct_batch(batch)
        terms = self.loss_terms(images, features, reconstructions)
        loss = self.weighted(terms)
        if self.skip_nonfinite(loss, batch, "decoder"):
            return None  # Lightning skips the optimizer step for this batch
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        if len(terms) > 1:
            self.log_terms(terms, len(images))
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

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        images, features, reconstructions = self.reconstruct_batch(batch)
        self.val_metric.update(images, reconstructions, batch.get("key"))
        self.val_sharpness.update(images, reconstructions)
        if not self.representation.runs_in_loader:  # Phi on the device: Phi(x_hat) too
            full = match_size(reconstructions.float(), tuple(images.shape[-2:]))
            self.val_feature_error.update(feature_error(self.features(full), features.float()))
        if batch_idx == 0:
            n = self.hparams.grid_images
            self.val_examples = (
                images[:n].detach().cpu(),
                reconstructions[:n].detach().float().cpu(),
            )
        return images, reconstructions  # for featinv.training.prior_blend

    def on_validation_epoch_end(self) -> None:
        if not self.val_metric.update_called:
            raise NoDataError(
                "no validation sample could be read: the shards of data.val_shards are "
                "unreadable, empty or hold no decodable image (the warnings above name them)"
            )
        results = self.val_metric.compute(self.train_mean_image())
        results["sharpness"] = self.val_sharpness.compute()
        if self.val_feature_error.update_called:
            results["feature_error"] = self.val_feature_error.compute()
        for metric in (self.val_metric, self.val_sharpness, self.val_feature_error):
            metric.reset()
        # torchmetrics has already reduced the states across ranks, so every rank holds the
        # same values; sync_dist only averages equal numbers (and keeps Lightning quiet).
        for name in results:
            self.log(
                f"val/{name}",
                results[name].float(),
                prog_bar=name == "normalized_error",
                sync_dist=True,
            )

    def configure_optimizers(self) -> Any:
        # Everything that trains with the decoder (Phi too, as an autoencoder); the
        # discriminator has its own optimizer.
        params = [
            p
            for name, p in self.named_parameters()
            if p.requires_grad and not name.startswith("discriminator.")
        ]
        optimizer = torch.optim.Adam(
            params,
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )
        total = self.trainer.estimated_stepping_batches
        if self.discriminator is not None and self.trainer.max_steps != -1:
            # the schedule steps once per batch, Lightning's max_steps counts both optimizers
            total = min(total, self.trainer.max_steps / 2)
        hp = self.hparams
        decay = linear_decay(total, hp.lr_decay_start, hp.lr_final_factor, hp.lr_warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
        scheduler = {"scheduler": schedule, "interval": "step"}
        if self.discriminator is None:
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        settings = self.losses.discriminator
        discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=settings.lr, betas=settings.betas
        )
        return [optimizer, discriminator_optimizer], [scheduler]

    def on_train_start(self) -> None:
        saved, self.resumed_settings = self.resumed_settings, None
        if saved is None or not self.trainer.optimizers:
            return
        configs = self.trainer.lr_scheduler_configs
        changes = apply_resumed_changes(
            self.trainer.optimizers[0],
            configs[0].scheduler if configs else None,
            saved,
            dict(self.hparams),
        )
        if changes:
            log.info("resumed with changed settings, applied: %s", ", ".join(changes))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["featinv"] = featinv_entry(self.train_image_sum, self.train_image_count)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, by name, to resume from a checkpoint of other networks; remember its
        optimizer settings, so that ones the user changed are applied (``on_train_start``)."""
        saved = checkpoint.get("hyper_parameters")
        if isinstance(saved, dict) and saved.get("image_size") == self.hparams.image_size:
            # featinv 0.2 recorded only the decoder options the user set
            saved["decoder_options"] = complete_decoder_options(
                self.representation, self.hparams.image_size, saved.get("decoder_options"), True
            )
        check_resumable(checkpoint, dict(self.hparams))
        self.resumed_settings = dict(checkpoint.get("hyper_parameters", {}))
        entry = checkpoint["featinv"]
        if "train_image_sum" in entry:
            self.train_image_sum = entry["train_image_sum"]
            self.train_image_count = int(entry["train_image_count"])
