"""Bilinear spatial binning of per-pixel votes into cells, as VLFeat's HOG and LBP do it.

A pixel at ``x`` (of those that vote) splits its vote between the cells left and right of
``hx = (x + 0.5) / cell_size - 0.5`` with weights ``1 - (hx - floor(hx))`` and
``hx - floor(hx)``, and likewise in y; votes that land outside the grid are dropped.

Nothing of size (pixels x bins) is materialized: the x-vote is a ``scatter_add`` into
(row, bin x padded cell column), and the y-vote sums each run of ``cell_size`` rows that share
their two cells with the run's fixed pair of weights (one small matrix product per run), which
keeps this fast on CPU and GPU alike.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch


@functools.lru_cache(maxsize=32)
def _axis_weights(
    num_pixels: int, cell_size: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For pixels 1..num_pixels-2: the left cell index + 1 (so that VLFeat's dropped cell -1
    becomes 0 of a padded axis) and the left and right weights."""
    coords = torch.arange(1, num_pixels - 1, dtype=torch.float64, device=device)
    h = (coords + 0.5) / cell_size - 0.5
    left = torch.floor(h)
    w_right = h - left
    return (left + 1).long(), (1 - w_right).to(dtype), w_right.to(dtype)


def _row_runs(cell_size: int) -> tuple[int, int]:
    """Rows ``y`` with ``(y - cell_size // 2) // cell_size == j`` share their top cell ``j``
    and bottom cell ``j + 1``, with weights that depend only on the row's place in the run.
    Returns the top cell of the first inner row's run (-1 or 0) and how many blank rows put
    that row at its place in the run."""
    offset = 1 - cell_size // 2
    first_top = offset // cell_size
    return first_top, offset - first_top * cell_size


@functools.lru_cache(maxsize=32)
def _run_weights(cell_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(2, cell_size)``: the top and bottom cell's weight of each row of a run."""
    place = torch.arange(cell_size, dtype=torch.float64, device=device)
    # h = (y + 0.5) / s - 0.5 with y = s // 2 + place + j * s, i.e. h - j as below
    bottom = (place + cell_size // 2 + 0.5) / cell_size - 0.5
    return torch.stack([1 - bottom, bottom]).to(dtype)


def bilinear_cell_histogram(
    votes: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    num_bins: int,
    image_size: tuple[int, int],
    cell_size: int,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Histograms ``(B, num_bins, grid_h, grid_w)`` of votes of the inner pixels.

    Args:
        votes: ``(bin, weight)`` pairs, each ``(B, H - 2, W - 2)``: the bin index (integer or
            integer-valued float, in ``[0, num_bins)``) and the weight of the vote of each pixel
            ``1..H-2, 1..W-2``; a weight of ``None`` means 1.
        num_bins: histogram bins per cell.
        image_size: ``(H, W)`` of the image the pixels come from.
        cell_size: pixels per cell side.
        grid: ``(grid_h, grid_w)`` cells; votes outside are dropped.
    """
    height, width = image_size
    grid_h, grid_w = grid
    first_bins = votes[0][0]
    batch = first_bins.shape[0]
    dtype = next((w.dtype for _, w in votes if w is not None), torch.float32)
    device = first_bins.device

    col_index, w_left, w_right = _axis_weights(width, cell_size, dtype, device)
    padded_w = max(int(col_index.max()) + 2, grid_w + 2)
    # Rows padded in front and behind so that they fall into whole runs of cell_size rows.
    first_top, blank = _row_runs(cell_size)
    runs = -(-(blank + height - 2) // cell_size)
    hist = torch.zeros(batch, runs * cell_size, num_bins * padded_w, dtype=dtype, device=device)
    inner = hist[:, blank : blank + height - 2]
    for bins, weight in votes:
        index = (bins * padded_w).add_(col_index.to(bins.dtype)).long()
        left = w_left.expand_as(index) if weight is None else weight * w_left
        right = w_right.expand_as(index) if weight is None else weight * w_right
        inner.scatter_add_(2, index, left)
        # The right cell's vote goes through a view shifted by one column: same index tensor.
        inner[..., 1:].scatter_add_(2, index, right)

    # Each run's rows summed with its top and bottom weights: (B, runs, 2, bins x padded cols).
    pairs = torch.matmul(
        _run_weights(cell_size, dtype, device), hist.view(batch, runs, cell_size, -1)
    )
    # Cell c is the top of run c - first_top and the bottom of the run before it.
    top, bottom = pairs[:, :, 0], pairs[:, :, 1]
    cells = torch.zeros(batch, grid_h, top.shape[-1], dtype=dtype, device=device)
    for part, shift in ((top, first_top), (bottom, first_top + 1)):
        lo, hi = max(shift, 0), min(shift + runs, grid_h)
        if hi > lo:
            cells[:, lo:hi] += part[:, lo - shift : hi - shift]
    out = cells.view(batch, grid_h, num_bins, padded_w)
    return out[..., 1 : grid_w + 1].permute(0, 2, 1, 3)
