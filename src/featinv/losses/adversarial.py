"""DeePSiM's adversarial losses (Dosovitskiy & Brox, NIPS 2016, Sect. 3), on the logits of a
discriminator D that sees the image and the features being inverted."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean[log D(real) + log(1 - D(fake))]``, D the sigmoid of the logits."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean log D(fake)``: the generator's term (DeePSiM's L_adv)."""
    return F.softplus(-fake_logits).mean()
