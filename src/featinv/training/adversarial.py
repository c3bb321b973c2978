"""DeePSiM's adversarial training procedure (Dosovitskiy & Brox, NIPS 2016, Sect. 3).

The step ``InversionModule.training_step`` takes when ``model.loss.adversarial`` is on:
Lightning's manual optimization with two Adam optimizers, a discriminator step and then a
decoder step on every batch; and the DDP setting that alternation needs, which the module's
``setup`` applies. Both are functions of the module, which owns the networks (``decoder``,
``discriminator``), the settings (``losses``) and the loss helpers (``reconstruct_batch``,
``loss_terms``, ``weighted``, ``skip_nonfinite``, ``log_terms``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.strategies import DDPStrategy, Strategy

from featinv.losses import discriminator_loss, generator_adversarial_loss
from featinv.ops import match_size
from featinv.reliability import OptionError

if TYPE_CHECKING:
    from featinv.training.module import InversionModule

log = logging.getLogger(__name__)


def allow_unused_parameters(strategy: Strategy) -> None:
    """Tell DDP that each backward pass leaves one network without gradients (the adversarial
    steps do); the module's ``setup`` calls it, before DDP wraps the module."""
    if not isinstance(strategy, DDPStrategy):
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


def adversarial_step(module: InversionModule, batch: dict[str, Any]) -> torch.Tensor:
    """DeePSiM's alternation: a discriminator step, then a decoder step (Sect. 3).

    Every decision (pause, skip) is taken on losses averaged over DDP processes, so all
    processes take the same one. Both optimizers step on every batch (a step without
    gradients leaves Adam's parameters and state as they are), so ``global_step`` counts
    two per batch, as Lightning counts optimizer steps.
    """
    decoder_opt, discriminator_opt = module.optimizers()
    images, features, reconstructions = module.reconstruct_batch(batch)
    target = match_size(images, tuple(reconstructions.shape[-2:]))
    n = len(images)
    mean = module.trainer.strategy.reduce  # a mean over processes; as is on one device
    with module.toggled_optimizer(discriminator_opt):
        fake = module.discriminator(reconstructions.detach().float(), features.float())
        loss_d = discriminator_loss(module.discriminator(target, features.float()), fake)
        loss_adv = generator_adversarial_loss(fake.detach())
        both = mean(torch.stack([loss_d.detach(), loss_adv]), reduce_op="mean")
        discriminator_opt.zero_grad(set_to_none=True)
        # DeePSiM's safeguard: a discriminator that wins too easily pauses
        paused = bool(both[0] < module.losses.discriminator.pause_ratio * both[1])
        if paused:
            module.discriminator_pauses += 1
        elif not module.skip_nonfinite(both[0], batch, "discriminator"):
            module.manual_backward(loss_d)
        discriminator_opt.step()
        discriminator_opt.zero_grad(set_to_none=True)  # none left for the decoder's step
    module.log("train/loss_discriminator", both[0], batch_size=n)
    module.log("train/discriminator_paused", float(paused), batch_size=n)
    with module.toggled_optimizer(decoder_opt):
        terms = module.loss_terms(images, features, reconstructions)
        loss = module.weighted(terms)
        decoder_opt.zero_grad(set_to_none=True)
        if not module.skip_nonfinite(mean(loss.detach(), reduce_op="mean"), batch, "decoder"):
            module.manual_backward(loss)
        decoder_opt.step()
        decoder_opt.zero_grad(set_to_none=True)
    module.lr_schedulers().step()
    module.log("train/loss", loss, prog_bar=True, batch_size=n)
    module.log_terms(terms, n)
    module.log("train/lr", decoder_opt.param_groups[0]["lr"])
    return loss.detach()
