"""DeePSiM's adversarial training procedure (Dosovitskiy & Brox, NIPS 2016, Sect. 3).

A mixin of ``featinv.training.InversionModule``, used when ``model.loss.adversarial`` is
on: Lightning's manual optimization with two Adam optimizers, a discriminator step and then
a decoder step on every batch, and the DDP setting that alternation needs. The module
provides the networks (``decoder``, ``discriminator``), the settings (``losses``) and the
loss helpers (``_reconstruct``, ``loss_terms``, ``weighted``, ``_nonfinite``,
``_log_terms``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy

from featinv.evaluation.metrics import match_size
from featinv.losses import discriminator_loss, generator_adversarial_loss
from featinv.reliability import OptionError

log = logging.getLogger(__name__)


class AdversarialTraining:
    """The alternating steps of the adversarial loss (mixed into the LightningModule)."""

    def setup(self, stage: str) -> None:
        # The adversarial steps leave one network without gradients in each backward pass;
        # DDP must be told to expect that (before it wraps the module, which is after this).
        strategy = self.trainer.strategy if self._trainer is not None else None
        if self.discriminator is None or not isinstance(strategy, DDPStrategy):
            return
        kwargs = getattr(strategy, "_ddp_kwargs", None)
        if kwargs is None:
            raise OptionError(
                "model.loss.adversarial under DDP needs "
                "--trainer.strategy=ddp_find_unused_parameters_true"
            )
        if not kwargs.get("find_unused_parameters"):
            log.info("adversarial loss: DDP set to find_unused_parameters=True")
            kwargs["find_unused_parameters"] = True

    def adversarial_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """DeePSiM's alternation: a discriminator step, then a decoder step (Sect. 3).

        Every decision (pause, skip) is taken on losses averaged over DDP processes, so all
        processes take the same one. Both optimizers step on every batch (a step without
        gradients leaves Adam's parameters and state as they are), so ``global_step`` counts
        two per batch, as Lightning counts optimizer steps.
        """
        decoder_opt, discriminator_opt = self.optimizers()
        images, features, reconstructions = self._reconstruct(batch)
        target = match_size(images, tuple(reconstructions.shape[-2:]))
        n = len(images)
        mean = self.trainer.strategy.reduce  # a mean over processes; as is on one device
        with self.toggled_optimizer(discriminator_opt):
            fake = self.discriminator(reconstructions.detach().float(), features.float())
            loss_d = discriminator_loss(self.discriminator(target, features.float()), fake)
            loss_adv = generator_adversarial_loss(fake.detach())
            both = mean(torch.stack([loss_d.detach(), loss_adv]), reduce_op="mean")
            discriminator_opt.zero_grad(set_to_none=True)
            # DeePSiM's safeguard: a discriminator that wins too easily pauses
            paused = bool(both[0] < self.losses.discriminator.pause_ratio * both[1])
            if paused:
                self.discriminator_pauses += 1
            elif not self._nonfinite(both[0], batch, "discriminator"):
                self.manual_backward(loss_d)
            discriminator_opt.step()
            discriminator_opt.zero_grad(set_to_none=True)  # none left for the decoder's step
        self.log("train/loss_discriminator", both[0], batch_size=n)
        self.log("train/discriminator_paused", float(paused), batch_size=n)
        with self.toggled_optimizer(decoder_opt):
            terms = self.loss_terms(images, features, reconstructions)
            loss = self.weighted(terms)
            decoder_opt.zero_grad(set_to_none=True)
            if not self._nonfinite(mean(loss.detach(), reduce_op="mean"), batch, "decoder"):
                self.manual_backward(loss)
            decoder_opt.step()
            decoder_opt.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self._log_terms(terms, n)
        self.log("train/lr", decoder_opt.param_groups[0]["lr"])
        return loss.detach()
