"""Dense SIFT exactly as VLFeat's ``vl_dsift`` computes it (fast mode), in torch, batched and
differentiable (Mahendran & Vedaldi, IJCV 2016, Sect. 4.1; their Table 4 inverts it).

Per grey image (0-255 scale, as VLFeat's SIFT is fed), following ``vl/dsift.c`` (0.9.21):

1. gradients by central differences (one-sided on the border), angle by VLFeat's
   ``vl_fast_atan2_f`` (a rational approximation: using it is what makes the result VLFeat's),
   magnitude, and bilinear binning into 8 orientations;
2. each orientation plane is convolved with a triangular kernel ``(b - |t|) / b^2``,
   ``b`` = the bin size (bilinear spatial binning), along y then x, with the border
   replicated (``vl_imconvcoltri``);
3. "fast" mode (M&V's footnote 2: the Gaussian window weights cells, not gradients): the 4x4
   bins of a frame are read at ``frame + bin * bin size`` and weighted by the mean of the
   Gaussian window (sigma = 2 bin sizes) over each bin;
4. each 128-vector is L2-normalized, clamped at 0.2 and L2-normalized again.

Frames start at pixel 0 and step by ``step`` while the 25x25 frame (bin size 8) fits; the
output is ``(128, frames along y, frames along x)``, channel ``biny * 32 + binx * 8 + t``
(VLFeat's descriptor order), a map the spatial decoder inverts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from featinv.ops import as_pair, rgb_to_grey
from featinv.representations.base import Representation, check_images, register

NUM_ORIENTATIONS = 8
NUM_BINS = 4
#: VL_EPSILON_F, FLT_EPSILON
EPSILON = 1.1920929e-07
TWO_PI = float(torch.tensor(2 * math.pi, dtype=torch.float32))


def fast_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """VLFeat's ``vl_fast_atan2_f``: a rational approximation of ``atan2`` (smooth, so that
    gradients flow; branches guarded so that neither divides by zero)."""
    abs_y = y.abs() + EPSILON
    positive = x >= 0
    ratio = torch.where(
        positive,
        (x - abs_y) / torch.where(positive, x + abs_y, 1.0),
        (x + abs_y) / torch.where(positive, 1.0, abs_y - x),
    )
    base = torch.where(positive, math.pi / 4, 3 * math.pi / 4)
    angle = base + (0.1821 * ratio * ratio - 0.9675) * ratio
    return torch.where(y < 0, -angle, angle)


def _gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``vl_dsift_process``'s derivatives of ``(B, H, W)``: central, one-sided on the border."""

    def along(t: torch.Tensor, dim: int) -> torch.Tensor:
        first = t.narrow(dim, 1, 1) - t.narrow(dim, 0, 1)
        last = t.narrow(dim, -1, 1) - t.narrow(dim, -2, 1)
        size = t.shape[dim]
        middle = 0.5 * (t.narrow(dim, 2, size - 2) - t.narrow(dim, 0, size - 2))
        return torch.cat([first, middle, last], dim=dim)

    return along(image, 2), along(image, 1)


def _window_mean(bin_size: int, index: int, window_size: float) -> float:
    """``_vl_dsift_get_bin_window_mean``: the Gaussian window averaged over one bin."""
    delta = bin_size * (index - 0.5 * (NUM_BINS - 1))
    sigma = bin_size * window_size
    total = sum(math.exp(-0.5 * ((x - delta) / sigma) ** 2) for x in range(-bin_size + 1, bin_size))
    return total / (2 * bin_size - 1)


def _triangular(planes: torch.Tensor, size: int, stride: int = 1) -> torch.Tensor:
    """``vl_imconvcoltri`` along y then x: kernel ``(size - |t|) / size^2``, border replicated,
    at every ``stride``-th row and column (the frames read nothing else)."""
    t = torch.arange(-size + 1, size, dtype=planes.dtype, device=planes.device)
    kernel = (size - t.abs()) / size**2
    channels = planes.shape[1]
    column = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(
        F.pad(planes, (0, 0, size - 1, size - 1), mode="replicate"),
        column,
        stride=(stride, 1),
        groups=channels,
    )
    row = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    return F.conv2d(
        F.pad(out, (size - 1, size - 1, 0, 0), mode="replicate"),
        row,
        stride=(1, stride),
        groups=channels,
    )


def _normalized(descriptors: torch.Tensor) -> torch.Tensor:
    """``_vl_dsift_normalize_histogram`` over the 128 channels: divide by the norm + eps."""
    squares = (descriptors * descriptors).sum(dim=1, keepdim=True)
    norm = torch.where(squares < 1e-8, 0.0, squares.clamp_min(1e-8).sqrt())
    return descriptors / (norm + EPSILON)


def dsift_grid(height: int, width: int, bin_size: int = 8, step: int = 8) -> tuple[int, int]:
    """Frames along y and x: ``(side - frame) // step + 1`` with frame ``3 * bin + 1``."""
    frame = bin_size * (NUM_BINS - 1) + 1
    return (max((height - frame) // step + 1, 0), max((width - frame) // step + 1, 0))


def dsift_features(
    grey: torch.Tensor, bin_size: int = 8, step: int = 8, window_size: float = 2.0
) -> torch.Tensor:
    """Dense SIFT (``vl_dsift``, fast mode) of ``(B, 1, H, W)`` grey images on the 0-255 scale.

    Returns:
        ``(B, 128, frames_y, frames_x)``.
    """
    image = grey[:, 0]
    gx, gy = _gradients(image)
    squares = gx * gx + gy * gy
    magnitude = torch.where(squares < 1e-8, 0.0, squares.clamp_min(1e-8).sqrt())
    angle = fast_atan2(gy, gx)
    angle = torch.where(angle < 0, angle + TWO_PI, angle)
    position = angle * (NUM_ORIENTATIONS / (2 * math.pi))
    index = position.detach().floor()
    fraction = position - index
    index = index.long()
    planes = torch.zeros(
        image.shape[0], NUM_ORIENTATIONS, *image.shape[1:], dtype=image.dtype, device=image.device
    )
    planes = planes.scatter_add(
        1, (index % NUM_ORIENTATIONS)[:, None], ((1 - fraction) * magnitude)[:, None]
    )
    planes = planes.scatter_add(
        1, ((index + 1) % NUM_ORIENTATIONS)[:, None], (fraction * magnitude)[:, None]
    )
    # Frames read the pooled planes at multiples of bin_size and step only: pooling at the
    # multiples of their gcd computes those and skips the rest (1/64 of the pixels at 8 and 8).
    stride = math.gcd(bin_size, step)
    pooled = _triangular(planes, bin_size, stride)
    frames_y, frames_x = dsift_grid(*image.shape[1:], bin_size, step)
    weights = [_window_mean(bin_size, i, window_size) * bin_size for i in range(NUM_BINS)]
    bins = []
    jump, cell = step // stride, bin_size // stride
    for bin_y in range(NUM_BINS):
        for bin_x in range(NUM_BINS):
            top, left = bin_y * cell, bin_x * cell
            window = pooled[
                :,
                :,
                top : top + (frames_y - 1) * jump + 1 : jump,
                left : left + (frames_x - 1) * jump + 1 : jump,
            ]
            bins.append(window * (weights[bin_x] * weights[bin_y]))
    descriptors = torch.cat(bins, dim=1)  # channel = (bin_y * 4 + bin_x) * 8 + t
    descriptors = _normalized(descriptors).clamp(max=0.2)
    return _normalized(descriptors)


@register
class DSIFT(Representation):
    """Dense SIFT of grey images, VLFeat's ``vl_dsift`` in fast mode (M&V, Sect. 4.1).

    Args:
        bin_size: pixels per spatial bin (the paper's cell size, 8).
        step: pixels between frames (8).
    """

    name = "dsift"
    differentiable = True

    def __init__(self, bin_size: int = 8, step: int = 8) -> None:
        super().__init__()
        if bin_size < 2 or step < 1:
            raise ValueError(f"DSIFT needs bin_size >= 2 and step >= 1, got {bin_size}, {step}")
        self.bin_size, self.step = bin_size, step

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        return self.bin_size * (NUM_BINS - 1) + 1  # one frame

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        return (128, *dsift_grid(*as_pair(image_size), self.bin_size, self.step))

    def config(self) -> dict[str, Any]:
        return {"bin_size": self.bin_size, "step": self.step}

    def baseline_defaults(self) -> dict[str, Any]:
        """Mahendran & Vedaldi, Sect. 5.1: C = 20, no jitter (Table 4)."""
        return {"c": 20.0, "jitter": 1}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.min_image_size, "DSIFT")
        return dsift_features(rgb_to_grey(images) * 255.0, self.bin_size, self.step)

    def extra_repr(self) -> str:
        return f"bin_size={self.bin_size}, step={self.step}"
