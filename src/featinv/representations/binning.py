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
from typing import Any

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

    Differentiable in the weights (the bins are constants): its gradient is the transposed
    binning, a matrix product per run and two gathers per vote.

    Args:
        votes: ``(bin, weight)`` pairs, each ``(B, H - 2, W - 2)``: the bin index (integer or
            integer-valued float, in ``[0, num_bins)``) and the weight of the vote of each pixel
            ``1..H-2, 1..W-2``; a weight of ``None`` means 1.
        num_bins: histogram bins per cell.
        image_size: ``(H, W)`` of the image the pixels come from.
        cell_size: pixels per cell side.
        grid: ``(grid_h, grid_w)`` cells; votes outside are dropped.
    """
    first_bins = votes[0][0]
    weights = [weight for _, weight in votes]
    dtype = next((w.dtype for w in weights if w is not None), torch.float32)
    layout = _Layout(
        first_bins.shape[0], num_bins, image_size, cell_size, grid, dtype, first_bins.device
    )
    indices = [
        (bins * layout.padded_w).add_(layout.col_index.to(bins.dtype)).long() for bins, _ in votes
    ]
    if torch.is_grad_enabled() and any(w is not None and w.requires_grad for w in weights):
        return _CellHistogram.apply(layout, indices, *weights)
    return _histogram(layout, indices, weights)


class _Layout:
    """Where a pixel's votes go: the padded (row, bin x column) buffer and its runs of rows."""

    def __init__(
        self,
        batch: int,
        num_bins: int,
        image_size: tuple[int, int],
        cell_size: int,
        grid: tuple[int, int],
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        height, width = image_size
        self.batch, self.num_bins, self.grid, self.cell_size = batch, num_bins, grid, cell_size
        self.dtype, self.device = dtype, device
        self.col_index, self.w_left, self.w_right = _axis_weights(width, cell_size, dtype, device)
        self.padded_w = max(int(self.col_index.max()) + 2, grid[1] + 2)
        # Rows padded in front and behind so that they fall into whole runs of cell_size rows.
        self.first_top, self.blank = _row_runs(cell_size)
        self.runs = -(-(self.blank + height - 2) // cell_size)
        self.inner_rows = slice(self.blank, self.blank + height - 2)
        self.run_weights = _run_weights(cell_size, dtype, device)

    def row_buffer(self) -> torch.Tensor:
        """Zeros ``(B, runs * cell_size, num_bins * padded_w)``."""
        shape = (self.batch, self.runs * self.cell_size, self.num_bins * self.padded_w)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def run_parts(self) -> list[tuple[int, slice, slice]]:
        """``(0 top | 1 bottom, runs, cells)``: cell c is the top of run c - first_top and the
        bottom of the run before it."""
        parts = []
        for which, shift in ((0, self.first_top), (1, self.first_top + 1)):
            lo, hi = max(shift, 0), min(shift + self.runs, self.grid[0])
            if hi > lo:
                parts.append((which, slice(lo - shift, hi - shift), slice(lo, hi)))
        return parts


def _histogram(
    layout: _Layout, indices: list[torch.Tensor], weights: Sequence[torch.Tensor | None]
) -> torch.Tensor:
    """The votes at their flat (bin x padded column) ``indices`` into cells: ``scatter_add``
    along each row, then each run of rows summed into its two cells."""
    hist = layout.row_buffer()
    inner = hist[:, layout.inner_rows]
    for index, weight in zip(indices, weights, strict=True):
        left = layout.w_left.expand_as(index) if weight is None else weight * layout.w_left
        right = layout.w_right.expand_as(index) if weight is None else weight * layout.w_right
        inner.scatter_add_(2, index, left)
        # The right cell's vote goes through a view shifted by one column: same index tensor.
        inner[..., 1:].scatter_add_(2, index, right)

    # Each run's rows summed with its top and bottom weights: (B, runs, 2, bins x padded cols).
    runs = hist.view(layout.batch, layout.runs, layout.cell_size, -1)
    pairs = torch.matmul(layout.run_weights, runs)
    grid_h, grid_w = layout.grid
    cells = torch.zeros(
        layout.batch, grid_h, pairs.shape[-1], dtype=layout.dtype, device=layout.device
    )
    for which, run_slice, cell_slice in layout.run_parts():
        cells[:, cell_slice] += pairs[:, run_slice, which]
    out = cells.view(layout.batch, grid_h, layout.num_bins, layout.padded_w)
    return out[..., 1 : grid_w + 1].permute(0, 2, 1, 3)


class _CellHistogram(torch.autograd.Function):
    """The histogram with its transposed binning as the backward: each cell's gradient spread
    over its runs' rows (one matrix product) and read back at each vote's two cells (two
    gathers), with no copy of the row buffer per vote as autograd's in-place scatters keep."""

    @staticmethod
    def forward(
        ctx: Any, layout: _Layout, indices: list[torch.Tensor], *weights: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.layout, ctx.indices = layout, indices
        return _histogram(layout, indices, weights)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        layout: _Layout = ctx.layout
        grid_h, grid_w = layout.grid
        grad_cells = torch.zeros(
            layout.batch,
            grid_h,
            layout.num_bins,
            layout.padded_w,
            dtype=grad.dtype,
            device=grad.device,
        )
        grad_cells[..., 1 : grid_w + 1] = grad.permute(0, 2, 1, 3)
        grad_cells = grad_cells.view(layout.batch, grid_h, -1)
        grad_pairs = grad.new_zeros(layout.batch, layout.runs, 2, grad_cells.shape[-1])
        for which, run_slice, cell_slice in layout.run_parts():
            grad_pairs[:, run_slice, which] = grad_cells[:, cell_slice]
        grad_rows = torch.matmul(layout.run_weights.t(), grad_pairs)
        inner = grad_rows.view(layout.batch, -1, grad_pairs.shape[-1])[:, layout.inner_rows]
        grads: list[torch.Tensor | None] = []
        for index, needs in zip(ctx.indices, ctx.needs_input_grad[2:], strict=True):
            if not needs:
                grads.append(None)
                continue
            left = inner.gather(2, index).mul_(layout.w_left)
            grads.append(left.addcmul_(inner[..., 1:].gather(2, index), layout.w_right))
        return None, None, *grads
