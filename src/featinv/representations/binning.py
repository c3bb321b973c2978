"""Bilinear spatial binning of per-pixel votes into cells, as VLFeat's HOG and LBP do it.

A pixel at ``x`` (of those that vote) splits its vote between the cells left and right of
``hx = (x + 0.5) / cell_size - 0.5`` with weights ``1 - (hx - floor(hx))`` and
``hx - floor(hx)``, and likewise in y; votes that land outside the grid are dropped.

Nothing of size (pixels x bins) is materialized: the x-vote is a ``scatter_add`` into
(row, bin x padded cell column) and the y-vote is a matrix product with a fixed
(cells x rows) weight matrix, which keeps this fast on CPU and GPU alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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


def _row_matrix(
    num_pixels: int, num_cells: int, cell_size: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Dense ``(num_cells, num_pixels - 2)`` matrix of the bilinear votes of rows into cells."""
    padded, w_top, w_bottom = _axis_weights(num_pixels, cell_size, dtype, device)
    size = max(int(padded.max()) + 2, num_cells + 2)
    matrix = torch.zeros(size, num_pixels - 2, dtype=dtype, device=device)
    rows = torch.arange(num_pixels - 2, device=device)
    matrix[padded, rows] = w_top
    matrix[padded + 1, rows] = w_bottom
    return matrix[1 : num_cells + 1]


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
    hist = torch.zeros(batch, height - 2, num_bins * padded_w, dtype=dtype, device=device)
    for bins, weight in votes:
        index = (bins * padded_w).add_(col_index.to(bins.dtype)).long()
        left = w_left.expand_as(index) if weight is None else weight * w_left
        right = w_right.expand_as(index) if weight is None else weight * w_right
        hist.scatter_add_(2, index, left)
        # The right cell's vote goes through a view shifted by one column: same index tensor.
        hist[..., 1:].scatter_add_(2, index, right)

    # (grid_h, rows) @ (B, rows, bins x padded cols), then crop the padding.
    rows = _row_matrix(height, grid_h, cell_size, dtype, device)
    out = torch.matmul(rows, hist).view(batch, grid_h, num_bins, padded_w)
    return out[..., 1 : grid_w + 1].permute(0, 2, 1, 3)
