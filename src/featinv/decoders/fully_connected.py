"""The decoder for feature vectors (AlexNet fc6, fc7, fc8): Table 1 of Dosovitskiy & Brox."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from featinv.decoders.blocks import activated, image_upconv, upconv
from featinv.decoders.prior_blend import PriorBlend
from featinv.decoders.standardize import FeatureStandardizer


class FullyConnectedDecoder(nn.Module):
    """Three fully connected layers, a reshape to a small map, then 5x5 up-convolutions.

    Table 1 (FC8): fc 1000->4096->4096->4096, reshape 4x4x256, up-convolutions to 8x8x256,
    16x16x128, 32x32x64, 64x64x32, 128x128x3; leaky ReLU 0.2 after every layer but the last.

    Args:
        in_features: length of the feature vector.
        fc_width: width of the fully connected layers (4096).
        num_fc: number of fully connected layers (3).
        start_channels: channels of the reshaped map (256).
        start_size: side of the reshaped map (4).
        num_upconvs: up-convolutions (5: 4 -> 128).
        min_width: channel floor of the up-convolutions but the last.
        out_channels: image channels (3).
        standardize: standardize each feature dimension with statistics of the first this
            many training batches (``featinv.decoders.standardize``); 0: as they are.
        prior_blend: end with a blend toward the training data's mean image, calibrated on
            the validation photos (``featinv.decoders.prior_blend``).
    """

    def __init__(
        self,
        in_features: int,
        fc_width: int = 4096,
        num_fc: int = 3,
        start_channels: int = 256,
        start_size: int = 4,
        num_upconvs: int = 5,
        min_width: int = 32,
        out_channels: int = 3,
        standardize: int = 0,
        prior_blend: bool = False,
    ) -> None:
        super().__init__()
        self.standardize = FeatureStandardizer(in_features, standardize) if standardize else None
        self.in_features = in_features
        self.start = (start_channels, start_size, start_size)
        widths = [in_features] + [fc_width] * (num_fc - 1) + [start_channels * start_size**2]
        self.fc = nn.Sequential(*(activated(nn.Linear(a, b)) for a, b in pairwise(widths)))
        layers: list[nn.Module] = []
        channels = start_channels
        for i in range(num_upconvs):
            if i == num_upconvs - 1:
                layers.append(image_upconv(channels, out_channels))
            else:
                out = max(start_channels // 2**i, min_width)
                layers.append(activated(upconv(channels, out)))
                channels = out
        self.upconvs = nn.Sequential(*layers)
        self.output_size = (start_size * 2**num_upconvs,) * 2
        self.blend = PriorBlend(self.output_size, out_channels) if prior_blend else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"expected features of shape (batch, {self.in_features}), "
                f"got {tuple(features.shape)}"
            )
        if self.standardize is not None:
            features = self.standardize(features)
        images = self.upconvs(self.fc(features).view(-1, *self.start))
        return images if self.blend is None else self.blend(images)
