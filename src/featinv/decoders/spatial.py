"""The decoder for spatial feature maps (HOG, LBP, SIFT grid, AlexNet conv layers)."""

from __future__ import annotations

import math

import torch
from torch import nn

from featinv.decoders.blocks import activated, conv, image_upconv, upconv
from featinv.decoders.prior_blend import PriorBlend
from featinv.decoders.standardize import FeatureStandardizer
from featinv.ops import as_pair


def _halvings(size: int, target: int) -> int:
    """How many stride-2 convolutions (rounding up) bring ``size`` down to at most ``target``."""
    count = 0
    while size > target:
        size = math.ceil(size / 2)
        count += 1
    return count


class SpatialDecoder(nn.Module):
    """Contracting convolutions, then 5x5 up-convolutions back to image resolution (Sect. 2.2).

    "The networks include a contracting part, which processes the input features through a
    series of convolutional layers with occasional stride of 2, resulting in a feature map 64
    times smaller than the input image. Then the expanding part of the network again
    upsamples the feature map to the full image resolution by a series of up-convolutional
    layers." The bottleneck side is ``image_side / 64`` at paper scale (4x4 at 256 px), but
    never below ``min_bottleneck``: a 1x1 bottleneck at small images learns nothing but the
    mean colour (measured), so small images keep a spatial bottleneck.

    Args:
        in_channels: feature channels (31 for HOG).
        in_size: feature map ``(height, width)``.
        image_size: side (or ``(height, width)``) of the images to reconstruct.
        width: channels of the first convolution; each contraction doubles it up to
            ``max_width``, each up-convolution halves it down to ``min_width``.
        max_width: channel cap of the contracting part.
        min_width: channel floor of the expanding part.
        min_bottleneck: smallest side of the contracted map.
        bottleneck_factor: image side / bottleneck side at paper scale (64).
        convs_per_level: extra 3x3 convolutions after each up-convolution but the last
            (0 is the paper's design; more adds capacity at the same resolution).
        num_convs: 5x5 convolutions at the input resolution before any contraction (AlexNet
            conv layers: "three convolutional and several up-convolutional layers").
        out_channels: image channels (3).
        standardize: standardize each feature channel with statistics of the first this many
            training batches (``featinv.decoders.standardize``); 0: features as they are.
        prior_blend: end with a blend toward the training data's mean image, calibrated on
            the validation photos (``featinv.decoders.prior_blend``).
    """

    def __init__(
        self,
        in_channels: int,
        in_size: int | tuple[int, int],
        image_size: int | tuple[int, int],
        width: int = 256,
        max_width: int = 1024,
        min_width: int = 32,
        min_bottleneck: int = 4,
        bottleneck_factor: int = 64,
        convs_per_level: int = 0,
        num_convs: int = 1,
        out_channels: int = 3,
        standardize: int = 0,
        prior_blend: bool = False,
    ) -> None:
        super().__init__()
        self.standardize = FeatureStandardizer(in_channels, standardize) if standardize else None
        in_h, in_w = as_pair(in_size)
        img_h, img_w = as_pair(image_size)
        self.blend = PriorBlend((img_h, img_w), out_channels) if prior_blend else None
        self.in_shape = (in_channels, in_h, in_w)
        target = max(min(img_h, img_w) // bottleneck_factor, min_bottleneck)
        n_down = _halvings(min(in_h, in_w), target)
        bottleneck = math.ceil(min(in_h, in_w) / 2**n_down)
        n_up = max(round(math.log2(min(img_h, img_w) / bottleneck)), 1)

        layers: list[nn.Module] = [activated(conv(in_channels, width))]
        layers += [activated(conv(width, width)) for _ in range(num_convs - 1)]
        channels = width
        for _ in range(n_down):
            wider = min(2 * channels, max_width)
            layers += [activated(conv(channels, wider, stride=2)), activated(conv(wider, wider, 3))]
            channels = wider
        for level in range(n_up):
            last = level == n_up - 1
            narrower = out_channels if last else max(channels // 2, min_width)
            layers.append(
                image_upconv(channels, narrower) if last else activated(upconv(channels, narrower))
            )
            if not last:
                layers += [activated(conv(narrower, narrower, 3)) for _ in range(convs_per_level)]
            channels = narrower
        # Channels-last: oneDNN's and cuDNN's convolutions run faster on it than on NCHW.
        self.layers = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        # A stride-2, 5x5, padding-2 convolution maps n to ceil(n / 2); an up-convolution doubles.
        self.output_size = (
            math.ceil(in_h / 2**n_down) * 2**n_up,
            math.ceil(in_w / 2**n_down) * 2**n_up,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4 or tuple(features.shape[1:]) != self.in_shape:
            raise ValueError(
                f"expected features of shape (batch, {', '.join(map(str, self.in_shape))}), "
                f"got {tuple(features.shape)}"
            )
        if self.standardize is not None:
            features = self.standardize(features)
        images = self.layers(features.contiguous(memory_format=torch.channels_last))
        return images if self.blend is None else self.blend(images)
