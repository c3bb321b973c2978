"""Small tensor operations every layer uses: resizing to a size, sizes as pairs, grey images.

The ground floor of featinv: it imports nothing of featinv's, so representations, decoders,
data, metrics, losses, training and evaluation all import from here and never from each other
for these.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Luma weights of MATLAB's ``rgb2gray`` (ITU-R BT.601), which VLFeat's MATLAB examples --
#: and so the papers -- used to make the grey input of HOG, LBP and SIFT.
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def match_size(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``(B, C, H, W)`` images to ``size = (height, width)`` (a no-op when
    they have it): how a decoder's smaller output meets its input (Dosovitskiy & Brox, 2.2)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


class _Grey(torch.autograd.Function):
    """The weighted sum of the three planes; its backward is one product (autograd's would
    write a zero-filled copy of the whole batch for each plane it reads)."""

    @staticmethod
    def forward(ctx: Any, images: torch.Tensor) -> torch.Tensor:
        red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
        # three passes over one plane each, not a (B, 3, H, W) product and then its sum
        red_weight, green_weight, blue_weight = GREY_WEIGHTS
        return (red * red_weight).add_(green, alpha=green_weight).add_(blue, alpha=blue_weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor(GREY_WEIGHTS, dtype=grad.dtype, device=grad.device)
        return grad * weights.view(1, 3, 1, 1)


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """Convert RGB images ``(B, 3, H, W)`` to grey ``(B, 1, H, W)`` with MATLAB's weights."""
    if images.shape[1] == 1:
        return images
    return _Grey.apply(images)
