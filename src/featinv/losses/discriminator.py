"""The discriminator of the adversarial loss (Dosovitskiy & Brox, NIPS 2016, Sect. 3).

DeePSiM's discriminator sees both the image and the features being inverted: convolutions
process the image and are averaged over space, fully connected layers process the feature
vector, and the two are concatenated and classified real / reconstructed. Conditioning on
the features makes it judge "is this a photo *with these features*", not only "is this a
photo", so the generator cannot satisfy it with any sharp image.

A plain ``nn.Module`` (no Lightning), sized from the image and feature shapes it will see.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: DeePSiM's leaky ReLU slope in the discriminator.
LEAKY_SLOPE = 0.3


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


class Discriminator(nn.Module):
    """``D(image, features) -> logit`` (real: positive).

    Args:
        image_size: side of the images it judges.
        feature_shape: shape of one feature map or vector, without the batch.
        width: channels of the first convolution; they double at each stride-2 convolution up
            to ``8 * width``.
        feature_grid: spatial features are average-pooled to at most this side first, so the
            fully connected feature branch stays small for large early-layer maps.
    """

    def __init__(
        self,
        image_size: int,
        feature_shape: tuple[int, ...],
        width: int = 32,
        feature_grid: int = 4,
    ) -> None:
        super().__init__()
        # Image branch: stride-2 convolutions down to at most 8 pixels (at least 2 of them),
        # one more at stride 1, then the average over space (DeePSiM: five convolutions and
        # average pooling at 227 pixels).
        downsamplings = max(2, math.ceil(math.log2(max(image_size, 8) / 8)))
        layers: list[nn.Module] = []
        channels = 3
        for level in range(downsamplings):
            out = width * 2 ** min(level, 3)
            layers += [nn.Conv2d(channels, out, 4 if level == 0 else 3, 2, 1), _leaky()]
            channels = out
        layers += [nn.Conv2d(channels, channels, 3, 1, 1), _leaky(), nn.AdaptiveAvgPool2d(1)]
        self.image_branch = nn.Sequential(*layers, nn.Flatten())
        # Feature branch: two fully connected layers on the (pooled) feature vector.
        hidden = 4 * width
        if len(feature_shape) == 3:
            grid = (min(feature_shape[1], feature_grid), min(feature_shape[2], feature_grid))
            pool: nn.Module = nn.AdaptiveAvgPool2d(grid)
            size = feature_shape[0] * grid[0] * grid[1]
        else:
            pool, size = nn.Identity(), math.prod(feature_shape)
        self.feature_branch = nn.Sequential(
            pool,
            nn.Flatten(),
            nn.Linear(size, hidden),
            _leaky(),
            nn.Linear(hidden, hidden),
            _leaky(),
        )
        # Joint classifier: two fully connected layers on the concatenation.
        self.classifier = nn.Sequential(
            nn.Linear(channels + hidden, hidden), _leaky(), nn.Linear(hidden, 1)
        )

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(n,)``: positive for what looks like a photo with these features."""
        # Images to [-1, 1]; features divided by their root mean square per sample, so the
        # same layers suit HOG (values near 0.1) and a CNN layer (values in the hundreds).
        rms = features.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-6)
        features = features / rms.view(-1, *([1] * (features.dim() - 1)))
        joint = torch.cat([self.image_branch(images * 2 - 1), self.feature_branch(features)], dim=1)
        return self.classifier(joint).squeeze(1)


__all__ = ["Discriminator"]
