"""Building blocks of the inversion networks (Dosovitskiy & Brox, Sect. 2.2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from featinv.representations.input_normalization import IMAGENET_MEAN

#: "After each layer we apply leaky ReLU nonlinearity with slope 0.2" (Sect. 2.2).
LEAKY_SLOPE = 0.2


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 1) -> nn.Conv2d:
    """A 'same'-padded convolution; with stride 2 it halves the map (rounding up)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)


def upconv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """The paper's up-convolution: 2x upsampling by zero insertion + a 5x5 convolution.

    Putting each value in the top-left of a 2x2 block of zeros and convolving with a 5x5
    kernel is exactly a transposed convolution with stride 2, padding 2, output padding 1.
    """
    return nn.ConvTranspose2d(in_channels, out_channels, 5, stride=2, padding=2, output_padding=1)


def image_upconv(in_channels: int, out_channels: int = 3) -> nn.ConvTranspose2d:
    """The last up-convolution, the one that writes the image, with ImageNet's mean colour as
    its bias: a new decoder predicts a faint texture around natural photos' mean image.

    The paper does not say how its networks start. With PyTorch's default initialization the
    first prediction is a faint texture around black, and the first few hundred steps are
    spent finding the images' mean colour; on a trained network's deep features (which say
    little of colour) those steps swing the whole image's colour back and forth, and a short
    run ends worse than a constant. The weights keep PyTorch's default: zero weights would
    give a flat image, and a flat image has no gradient in HOG, SIFT or a CNN's feature loss.
    """
    layer = upconv(in_channels, out_channels)
    colour = IMAGENET_MEAN if out_channels == 3 else (sum(IMAGENET_MEAN) / 3,) * out_channels
    with torch.no_grad():
        layer.bias.copy_(torch.tensor(colour))
    return layer


def activated(layer: nn.Module) -> nn.Sequential:
    """``layer`` followed by the leaky ReLU that follows every layer but the last."""
    return nn.Sequential(layer, nn.LeakyReLU(LEAKY_SLOPE, inplace=True))


class AddedPart(nn.Module):
    """A decoder part added in a later version: a file saved before it existed holds none of
    its keys, and it loads as the identity (``to_identity``), so the old decoder's outputs
    are unchanged."""

    def to_identity(self) -> None:
        raise NotImplementedError

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        if not any(key.startswith(prefix) for key in state_dict):
            self.to_identity()
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
