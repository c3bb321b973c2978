"""DeePSiM's feature loss (Dosovitskiy & Brox, NIPS 2016, Sect. 3): the reconstruction's
features in a fixed comparator C against the image's, ``||C(x_hat_i) - C(x_i)||^2``."""

from __future__ import annotations

import torch

from featinv.representations import Representation

#: A feature norm below this fraction of the batch's root mean square counts as this fraction
#: (a blank image has no features to be relative to).
FLAT_IMAGE_FLOOR = 0.1


def feature_loss(
    comparator: Representation, reconstructions: torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    """``mean_i ||C(x_hat_i) - C(x_i)||^2 / ||C(x_i)||^2``: DeePSiM's L_feat, each image's
    term divided by its features' squared norm (so it is the mean squared feature error of
    Mahendran & Vedaldi, whatever the comparator's scale).

    Per image, not pooled over the batch: a nearly flat photo has small features, and a
    decoder that paints texture there is as wrong as one that misses an edge elsewhere. A
    norm below a tenth of the batch's root mean square counts as that tenth, so a blank image
    cannot blow the loss up. Computed in float32 even under mixed precision; gradients flow
    through C to the reconstruction, never into C's weights (frozen by ``build_comparator``).
    """
    with torch.autocast(images.device.type, enabled=False):
        with torch.no_grad():
            target = comparator(images.float())
        predicted = comparator(reconstructions.float())
    squared = (predicted - target).pow(2).flatten(1).sum(dim=1)
    norms = target.pow(2).flatten(1).sum(dim=1)
    floor = (FLAT_IMAGE_FLOOR**2 * norms.mean()).clamp_min(torch.finfo(torch.float32).tiny)
    return (squared / norms.clamp_min(floor)).mean()
