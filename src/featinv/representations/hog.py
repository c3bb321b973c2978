"""VLFeat's UoCTTI HOG (Felzenszwalb et al.) in torch: batched, on any device, differentiable.

This follows ``docs/features.md`` and VLFeat's ``vl/hog.c`` (``vl_hog_put_image`` and
``vl_hog_extract``) step by step; the numbers in the comments are the spec's steps. Dosovitskiy
& Brox (Sect. 2.1) invert exactly this descriptor with cell size 8 on grey images.

Nothing of size (pixels x 18 orientations) is ever materialized: each pixel votes into one
(or, for HOGb, two) orientation bins, binned into cells by ``bilinear_cell_histogram``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from featinv.ops import as_pair, rgb_to_grey
from featinv.representations.base import Representation, check_images, register
from featinv.representations.binning import bilinear_cell_histogram
from featinv.representations.hog_normalization import normalize_blocks

#: On the CPU a batch is computed in pieces of at most this many pixels (at least one image).
_CPU_PIXELS_PER_PIECE = 1 << 20


def hog_grid_size(height: int, width: int, cell_size: int = 8) -> tuple[int, int]:
    """Step 1: the number of HOG cells ``(hogH, hogW)`` VLFeat uses for an image."""
    return (height + cell_size // 2) // cell_size, (width + cell_size // 2) // cell_size


def _orientation_table(
    like: torch.Tensor, num_orientations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors along the bin centres, computed in double and rounded to ``like``'s dtype.

    In float32 these are exactly ``vl_hog_new``'s tables; in float64 they are exact, so that
    the bilinear weight's acos and its atan2 gradient (below) describe the same function.
    """
    return _orientation_table_for(num_orientations, like.dtype, like.device)


@functools.lru_cache(maxsize=16)
def _orientation_table_for(
    num_orientations: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.arange(num_orientations, dtype=torch.float64) * (math.pi / num_orientations)
    return angles.cos().to(device, dtype), angles.sin().to(device, dtype)


class _CentralDifferences(torch.autograd.Function):
    """``I(y, x+1) - I(y, x-1)`` and ``I(y+1, x) - I(y-1, x)`` at the inner pixels; the
    backward adds both into one gradient image (autograd's would zero-fill four)."""

    @staticmethod
    def forward(ctx: Any, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.shape, ctx.dtype, ctx.device = image.shape, image.dtype, image.device
        gx = image[..., 1:-1, 2:] - image[..., 1:-1, :-2]
        gy = image[..., 2:, 1:-1] - image[..., :-2, 1:-1]
        return gx, gy

    @staticmethod
    def backward(
        ctx: Any, grad_x: torch.Tensor | None, grad_y: torch.Tensor | None
    ) -> torch.Tensor:
        grad = torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        if grad_x is not None:
            grad[..., 1:-1, 2:] += grad_x
            grad[..., 1:-1, :-2] -= grad_x
        if grad_y is not None:
            grad[..., 2:, 1:-1] += grad_y
            grad[..., :-2, 1:-1] -= grad_y
        return grad


class _Magnitude(torch.autograd.Function):
    """``sqrt(gx^2 + gy^2)`` as VLFeat computes it, with the derivative ``(gx, gy) / m``,
    taken as 0 where ``m = 0`` (flat image regions)."""

    @staticmethod
    def forward(ctx: Any, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
        # as VLFeat rounds it: a fused multiply-add (addcmul) moves HOGb's weights by 1e-4
        magnitude = (gx * gx).add_(gy * gy).sqrt_()
        ctx.save_for_backward(gx, gy, magnitude)
        return magnitude

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gx, gy, magnitude = ctx.saved_tensors
        # Where m = 0 so are gx and gy: any finite ratio gives 0 there, without a mask. A floor
        # of sqrt(tiny) keeps grad / m finite for any |grad| below sqrt(max) and changes m
        # only below 1e-19 (float32).
        floor = torch.finfo(magnitude.dtype).tiny ** 0.5
        ratio = grad / magnitude.clamp_min(floor)
        return ratio * gx, ratio * gy


def _gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 2: central differences, the channel of largest gradient, and its magnitude."""
    gx, gy = _CentralDifferences.apply(image)
    if image.shape[1] > 1:
        # argmax returns the first maximum: VLFeat's strict ">" keeps the first channel on ties.
        with torch.no_grad():
            best = (gx * gx + gy * gy).argmax(dim=1, keepdim=True)
        gx, gy = gx.gather(1, best), gy.gather(1, best)
    gx, gy = gx.squeeze(1), gy.squeeze(1)
    return gx, gy, _Magnitude.apply(gx, gy)


def _vlfeat_bins(
    gx: torch.Tensor, gy: torch.Tensor, num_orientations: int, rank: int = 0
) -> torch.Tensor:
    """Step 3 verbatim for a few pixels: all projections, the best (rank 0) or second-best
    (rank 1) |s_k| as VLFeat's scan finds them (first maximum wins ties), with the sign rule.
    """
    cos_table, sin_table = _orientation_table(gx, num_orientations)
    scores = gx[:, None] * cos_table + gy[:, None] * sin_table
    magnitudes = scores.abs()
    best = magnitudes.argmax(dim=1, keepdim=True)
    if rank == 1:
        best = magnitudes.scatter(1, best, -1.0).argmax(dim=1, keepdim=True)
    return best[:, 0] + num_orientations * (scores.gather(1, best)[:, 0] < 0)


@torch.no_grad()
def _hard_orientation_bins(
    gx: torch.Tensor, gy: torch.Tensor, num_orientations: int
) -> torch.Tensor:
    """Step 3, hard assignment: the directed bin of every pixel, rotated by half a turn.

    argmax_k |s_k| with the sign rule is the directed bin centre nearest to the gradient angle,
    i.e. the rounded angle. Only near a bin boundary can rounding and VLFeat's float32
    projections disagree, so those few pixels are recomputed with VLFeat's own scan. One
    boundary is common in photos: a vertical gradient (gx = 0, a few percent of the pixels)
    lies exactly on it when n is odd, where VLFeat's scan settles the tie from its table; the
    rounding is nudged to that side (``_vertical_tie``) instead of recomputing them.

    Returns (as floats) ``(bin + n) mod 2n``, except that angles next to +pi give 2n rather
    than 0: shifting the angle by +pi makes it non-negative, so rounding is a floor and no
    integer modulo over every pixel is needed. ``hog_features`` undoes the rotation.
    """
    # angle in units of bins, shifted into [0.5, 2n + 0.5] so that floor() rounds.
    offset = num_orientations + 0.5 + _vertical_tie(num_orientations, gx.dtype, gx.device)
    turns = torch.atan2(gy, gx).mul_(num_orientations / math.pi).add_(offset)
    # A NaN pixel must give NaN features (and a NaN loss the trainer reports), not a garbage
    # bin index: its vote carries the NaN magnitude into a valid bin.
    turns = torch.nan_to_num_(turns, nan=0.5)
    nearest = turns.floor()
    # nonzero where the angle is within 1e-4 bins of a boundary (the rounding's error is under
    # 1e-5) and gx != 0; in place and in float arithmetic (a comparison's boolean tensor costs
    # more than the rest on the CPU)
    ambiguous = turns.sub_(nearest).sub_(0.5).abs_().sub_(0.5 - 1e-4).clamp_min_(0.0).mul_(gx)
    where = _sparse_nonzero(ambiguous)
    if where[0].numel():
        exact = _vlfeat_bins(gx[where], gy[where], num_orientations)
        nearest[where] = exact.add_(num_orientations).remainder_(2 * num_orientations).to(nearest)
    return nearest


@functools.lru_cache(maxsize=16)
def _vertical_tie(num_orientations: int, dtype: torch.dtype, device: torch.device) -> float:
    """How rounding must lean at gx = 0 to land where VLFeat's scan does: there |s_k| =
    |gy| |sin_k|, and for odd n two table entries are equal up to rounding. -1e-5 bins when the
    lower bin wins (the scan keeps the first of equals), +1e-5 when the upper one is larger,
    0 when 90 degrees is a bin centre (even n)."""
    if num_orientations % 2 == 0:
        return 0.0
    _, sin_table = _orientation_table_for(num_orientations, dtype, torch.device("cpu"))
    lower, upper = num_orientations // 2, num_orientations // 2 + 1
    return -1e-5 if float(sin_table[lower].abs()) >= float(sin_table[upper].abs()) else 1e-5


def _sparse_nonzero(values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``values.nonzero(as_tuple=True)`` for a ``(B, H, W)`` tensor with few nonzeros: the rows
    that hold any first (one reduction), then the nonzeros of those rows only; a nonzero()
    over every pixel costs as much as several arithmetic passes."""
    low, high = torch.aminmax(values, dim=-1)
    rows = ((low != 0) | (high != 0)).nonzero(as_tuple=True)
    if not rows[0].numel():
        return (*rows, rows[0])
    index, cols = values[rows].nonzero(as_tuple=True)
    return rows[0][index], rows[1][index], cols


def _bilinear_orientation_votes(
    gx: torch.Tensor, gy: torch.Tensor, magnitude: torch.Tensor, num_orientations: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Step 3, bilinear assignment ("HOGb"): the two best bins and their weights.

    The best and second-best undirected bins are the two bin centres around the gradient's
    angle, so two float32 projections (as VLFeat computes them) replace nine.
    """
    cos_table, sin_table = _orientation_table(gx, num_orientations)
    with torch.no_grad():
        turns = torch.atan2(gy, gx).mul_(num_orientations / math.pi).add_(num_orientations)
        turns = torch.nan_to_num_(turns, nan=0.0)  # NaN pixels: valid bin, NaN vote
        k0 = turns.long().remainder_(num_orientations)
        k1 = (k0 + 1).remainder_(num_orientations)
    s0 = gx * cos_table[k0] + gy * sin_table[k0]
    s1 = gx * cos_table[k1] + gy * sin_table[k1]
    a0, a1 = s0.abs(), s1.abs()
    # VLFeat scans k upwards with a strict ">": on a tie the lower k wins.
    first = (a0 > a1) | ((a0 == a1) & (k0 < k1))
    k_best, k_second = torch.where(first, k0, k1), torch.where(first, k1, k0)
    s_best, s_second = torch.where(first, s0, s1), torch.where(first, s1, s0)
    bins = [
        k_best + num_orientations * (s_best < 0),
        k_second + num_orientations * (s_second < 0),
    ]
    # At a bin centre VLFeat's float32 acosf still gives the second bin a weight of ~1e-3, and
    # which neighbour gets it is decided by the last bits of two projections: ask VLFeat's scan.
    with torch.no_grad():
        frac = turns - turns.floor()
        where = ((frac < 1e-3) | (frac > 1 - 1e-3)).nonzero(as_tuple=True)
        if where[0].numel():
            bins[1][where] = _vlfeat_bins(gx[where], gy[where], num_orientations, rank=1)
    # VLFeat: angle0 = acosf(min(|s_best| / max(m, 1e-10), 1)). Its derivative is infinite at
    # the bin centre, so the forward value is VLFeat's and the gradient is that of the
    # equivalent atan2(|cross|, |dot|), made safe where the gradient vanishes.
    with torch.no_grad():
        angle_vlfeat = torch.acos((s_best.abs() / magnitude.clamp_min(1e-10)).clamp(max=1.0))
    cross = gy * cos_table[k_best] - gx * sin_table[k_best]
    moving = magnitude > 0
    angle_smooth = torch.atan2(
        torch.where(moving, cross.abs(), 0.0), torch.where(moving, s_best.abs(), 1.0)
    )
    angle = angle_smooth + (angle_vlfeat - angle_smooth).detach()
    second_weight = angle / (math.pi / num_orientations)
    return bins, [magnitude * (1 - second_weight), magnitude * second_weight]


def hog_features(
    image: torch.Tensor,
    cell_size: int = 8,
    num_orientations: int = 9,
    bilinear_orientations: bool = False,
) -> torch.Tensor:
    """UoCTTI HOG of a batch of images, exactly as VLFeat computes it.

    Args:
        image: ``(B, C, H, W)`` float tensor, any value scale (VLFeat's examples use [0, 1];
            the scale only matters through the 1e-4 of the block normalization).
        cell_size: pixels per cell side.
        num_orientations: undirected orientations (9 in the paper: 31 output channels).
        bilinear_orientations: split each vote between the two nearest orientation bins
            (VLFeat's bilinear orientation assignment, "HOGb" in Mahendran & Vedaldi, IJCV).

    Returns:
        ``(B, 3 * num_orientations + 4, hogH, hogW)`` features.
    """
    height, width = image.shape[-2:]
    if height < 4 or width < 4:
        raise ValueError(f"HOG needs images larger than 3x3 pixels, got {height}x{width}")
    per_piece = max(1, _CPU_PIXELS_PER_PIECE // (height * width))
    if image.device.type == "cpu" and image.shape[0] > per_piece:
        # Intermediates of a few MB are reused by the allocator and stay in cache; those of a
        # whole large batch are fresh pages on every call (docs/benchmarks.md).
        return torch.cat(
            [
                hog_features(piece, cell_size, num_orientations, bilinear_orientations)
                for piece in image.split(per_piece)
            ]
        )
    hog_h, hog_w = hog_grid_size(height, width, cell_size)
    n_dir = 2 * num_orientations

    gx, gy, magnitude = _gradients(image)
    if bilinear_orientations:
        bins, weights = _bilinear_orientation_votes(gx, gy, magnitude, num_orientations)
    else:
        bins, weights = [_hard_orientation_bins(gx, gy, num_orientations)], [magnitude]

    # Step 4: bilinear votes into cells. The hard path's bins are rotated by n and use one
    # extra block (2n, a second copy of block 0), folded back below.
    hist = bilinear_cell_histogram(
        list(zip(bins, weights, strict=True)), n_dir + 1, (height, width), cell_size, (hog_h, hog_w)
    )
    if not bilinear_orientations:
        n = num_orientations
        hist = torch.cat([hist[:, n:n_dir], hist[:, :1] + hist[:, n_dir:], hist[:, 1:n]], dim=1)
    else:
        hist = hist[:, :n_dir]

    # Steps 5 and 6: block normalization, truncation, the directed, undirected and texture
    # channels.
    return normalize_blocks(hist)


@register
class HOG(Representation):
    """UoCTTI HOG of grey images, 31 channels at cell size 8 (Dosovitskiy & Brox, Sect. 2.1).

    Args:
        cell_size: pixels per cell side (VLFeat default 8).
        num_orientations: undirected orientations (9: 31 channels).
        bilinear_orientations: VLFeat's bilinear orientation assignment ("HOGb").
        grayscale: convert RGB to grey first, as the paper does; if false, VLFeat's colour
            mode takes, per pixel, the channel of largest gradient.
        texture: keep UoCTTI's 4 texture channels (31 channels). ``False`` gives Mahendran &
            Vedaldi's HOG (IJCV 2016, Sect. 4.1, footnote 2: "the latter are ignored"): the 18
            directed and 9 undirected channels, 27 in all.
    """

    name = "hog"
    differentiable = True
    min_image_size = 4

    def __init__(
        self,
        cell_size: int = 8,
        num_orientations: int = 9,
        bilinear_orientations: bool = False,
        grayscale: bool = True,
        texture: bool = True,
    ) -> None:
        super().__init__()
        self.cell_size = cell_size
        self.num_orientations = num_orientations
        self.bilinear_orientations = bilinear_orientations
        self.grayscale = grayscale
        self.texture = texture

    @property
    def num_channels(self) -> int:
        return 3 * self.num_orientations + (4 if self.texture else 0)

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        height, width = as_pair(image_size)
        return (self.num_channels, *hog_grid_size(height, width, self.cell_size))

    def config(self) -> dict[str, Any]:
        return {
            "cell_size": self.cell_size,
            "num_orientations": self.num_orientations,
            "bilinear_orientations": self.bilinear_orientations,
            "grayscale": self.grayscale,
            "texture": self.texture,
        }

    def baseline_defaults(self) -> dict[str, Any]:
        """Mahendran & Vedaldi, Sect. 5.1: C = 20 for HOG, no jitter."""
        return {"c": 20.0, "jitter": 1}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.min_image_size, "HOG")
        if self.grayscale:
            images = rgb_to_grey(images)
        features = hog_features(
            images, self.cell_size, self.num_orientations, self.bilinear_orientations
        )
        return features if self.texture else features[:, : self.num_channels]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())
