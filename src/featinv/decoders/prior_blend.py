"""A decoder's output pulled toward the training data's mean image, by a weight calibrated on
held-out photos.

A decoder trained with MSE predicts the conditional mean of the image given the features
(Dosovitskiy & Brox, Sect. 2). Trained on few photos, a decoder for a deep layer learns that
conditional mean for them: deep features tell which training photo a crop came from, and on
photos from elsewhere the structure it is sure of is wrong, which costs more than predicting
the training data's mean image. ``x_hat = prior + weight * (decoded - prior)`` with ``prior``
the training data's mean image and ``weight`` in [0, 1] chosen on the validation photos
(``featinv.training.prior_blend``) is the shrinkage that fixes that over-confidence: for a
decoder that generalizes, as on early layers, the weight comes out near 1. Being part of
the decoder, the blend is saved with it and applied wherever it runs outside training
(validation scores the decoder itself, and calibrates the blend); a file from before it
existed loads with the identity (weight 1).
"""

from __future__ import annotations

import torch

from featinv.decoders.blocks import AddedPart
from featinv.ops import as_pair, match_size


class PriorBlend(AddedPart):
    """``prior + weight * (images - prior)``, outside training mode only.

    Args:
        image_size: side (or height, width) of the images the prior is kept at.
        channels: image channels.
    """

    def __init__(self, image_size: int | tuple[int, int], channels: int = 3) -> None:
        super().__init__()
        self.register_buffer("prior", torch.zeros(channels, *as_pair(image_size)))
        self.register_buffer("weight", torch.ones(()))
        #: set by ``bypassed``: the decoder's own output, for validation and calibration
        self.enabled = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training or not self.enabled:
            return images
        prior = match_size(self.prior.to(images.dtype)[None], tuple(images.shape[-2:]))
        return prior + self.weight.to(images.dtype) * (images - prior)

    @torch.no_grad()
    def calibrate(self, prior: torch.Tensor, weight: float) -> None:
        """Blend toward ``prior`` ``(C, H, W)`` (resized to the kept size) with ``weight``."""
        self.prior.copy_(match_size(prior.to(self.prior)[None], tuple(self.prior.shape[-2:]))[0])
        self.weight.fill_(min(max(float(weight), 0.0), 1.0))

    def to_identity(self) -> None:
        """A decoder saved before the blend existed: its output as it is."""
        self.prior.zero_()
        self.weight.fill_(1.0)

    def extra_repr(self) -> str:
        return f"weight={float(self.weight):.3f}"
