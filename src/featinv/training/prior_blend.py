"""Calibrating a decoder's blend toward the training data's mean image on the validation photos
(``featinv.decoders.prior_blend``).

At every validation the decoder is scored as it is (its blend bypassed), and for each photo
``x``, its reconstruction ``y`` and the training data's mean image ``m`` three numbers are
kept: ``|x - m|^2``, ``<x - m, y - m>`` and ``|y - m|^2``. The distance of the blended
reconstruction ``m + w (y - m)`` to the photo follows from them exactly for every ``w``; the
weight in [0, 1] with the smallest mean distance (the normalized error's numerator) is set in
the decoder before the validation's checkpoints are written, so ``best.ckpt`` carries the
weight chosen on the validation that selected it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import Metric

from featinv.decoders.prior_blend import PriorBlend
from featinv.ops import match_size

#: the weights tried: 0, 0.01, ..., 1
WEIGHTS = torch.linspace(0, 1, 101, dtype=torch.float64)


class BlendStatistics(Metric):
    """Per photo ``(|x - m|^2, <x - m, y - m>, |y - m|^2)``, gathered across processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("terms", [], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, reconstructions: torch.Tensor, prior: torch.Tensor):
        images = images.double()
        size = tuple(images.shape[-2:])
        shown = match_size(reconstructions.detach().double(), size)
        mean = match_size(prior.to(images)[None], size)
        target, offset = (images - mean).flatten(1), (shown - mean).flatten(1)
        self.terms.append(
            torch.stack(
                [target.pow(2).sum(1), (target * offset).sum(1), offset.pow(2).sum(1)], dim=1
            )
        )

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The best weight and the mean distance of the photos to their blended
        reconstructions with it."""
        terms = self.terms if isinstance(self.terms, torch.Tensor) else torch.cat(self.terms)
        a, b, c = (terms[:, i : i + 1] for i in range(3))
        w = WEIGHTS.to(terms)[None]
        distances = (a - 2 * w * b + w.pow(2) * c).clamp_min(0).sqrt().mean(dim=0)
        best = int(distances.argmin())
        return WEIGHTS[best], distances[best]


def _blend(pl_module: L.LightningModule) -> PriorBlend | None:
    blend = getattr(getattr(pl_module, "decoder", None), "blend", None)
    return blend if isinstance(blend, PriorBlend) else None


class PriorBlendCalibration(Callback):
    """Bypass the decoder's blend during validation, then set its weight from what the
    validation saw (see the module's docstring). Decoders without a blend are left alone."""

    def __init__(self) -> None:
        self.statistics = BlendStatistics()
        self.prior: torch.Tensor | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        blend = _blend(pl_module)
        if blend is None:
            return
        blend.enabled = False
        # collective under DDP, as every process starts the validation
        self.prior = pl_module.train_mean_image()
        self.statistics = self.statistics.to(pl_module.device)
        self.statistics.reset()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if _blend(pl_module) is None or self.prior is None or outputs is None:
            return
        images, reconstructions = outputs
        self.statistics.update(images, reconstructions, self.prior)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        blend = _blend(pl_module)
        if blend is None:
            return
        blend.enabled = True
        if self.prior is None or not self.statistics.update_called:
            return  # no training image seen yet (the sanity check): nothing to blend toward
        weight, distance = self.statistics.compute()
        blend.calibrate(self.prior, float(weight))
        pl_module.log("val/prior_blend_weight", float(weight), sync_dist=True)
        pl_module.log("val/blended_distance", float(distance), sync_dist=True)
