"""Steps 5 and 6 of VLFeat's UoCTTI HOG: block normalization, truncation, and the 31 channels.

From a cell's directed histogram ``h`` (2n bins) and its undirected one ``u = h[:n] + h[n:]``,
each of the four 2x2 blocks around the cell gives a factor ``f_k = (sum of the block's |u|^2 +
1e-4)^(-1/2)``; the features are ``0.5 sum_k min(f_k h, 0.2)``, ``0.5 sum_k min(f_k u, 0.2)``
and the texture values ``(1/sqrt(18)) sum_c min(f_k u_c, 0.2)`` (Felzenszwalb et al., PAMI
2010, Sect. 6.2; ``docs/features.md``).

One autograd function with the chain rule written out: these few dozen small operations run
in every step of the optimization baseline, and autograd's graph of them cost more than the
operations themselves.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Step 6: the truncation threshold of every normalized histogram value.
CLAMP = 0.2
#: Step 5: the smoothing epsilon of the block normalization (depends on the image scale).
NORM_EPS = 1e-4
#: Step 6: VLFeat's texture factor ``1 / sqrt(18)`` computed in float32.
TEXTURE_FACTOR = 1.0 / math.sqrt(18.0)


def normalize_blocks(hist: torch.Tensor) -> torch.Tensor:
    """``(B, 2n, hogH, hogW)`` directed histograms -> ``(B, 3n + 4, hogH, hogW)`` features."""
    return _BlockNormalization.apply(hist)


def _box_sums(grid: torch.Tensor) -> torch.Tensor:
    """Sums of every 2x2 window of ``(B, H, W)``: ``(B, H - 1, W - 1)``."""
    rows = grid[:, :-1] + grid[:, 1:]
    return rows[..., :-1] + rows[..., 1:]


def _corners(factor: torch.Tensor) -> torch.Tensor:
    """``(B, 4, 1, hogH, hogW)``: the TL, TR, BL, BR block factors of each cell."""
    return torch.stack(
        [factor[:, :-1, :-1], factor[:, :-1, 1:], factor[:, 1:, :-1], factor[:, 1:, 1:]], dim=1
    ).unsqueeze(2)


def _below_clamp(values: torch.Tensor) -> torch.Tensor:
    """1.0 where ``values < CLAMP`` (where ``min(., CLAMP)`` passes the gradient), else 0.0,
    in float arithmetic: a comparison's boolean tensor costs several times more on the CPU."""
    return torch.sub(CLAMP, values).sign_().clamp_min_(0.0)


class _BlockNormalization(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hist: torch.Tensor) -> torch.Tensor:
        n = hist.shape[1] // 2
        undirected = hist[:, :n] + hist[:, n:]
        energy = torch.linalg.vecdot(undirected, undirected, dim=1)
        # 2x2 block sums with replicated borders: (B, hogH + 1, hogW + 1)
        padded = torch.nn.functional.pad(energy[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        factor = torch.rsqrt(_box_sums(padded) + NORM_EPS)
        factors = _corners(factor)
        directed = factors * hist.unsqueeze(1)  # (B, 4, 2n, hogH, hogW)
        undirected_scaled = factors * undirected.unsqueeze(1)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(hist, undirected, factor, directed, undirected_scaled)
            directed_clamped = directed.clamp(max=CLAMP)
            undirected_clamped = undirected_scaled.clamp(max=CLAMP)
        else:  # features only (training's targets, evaluation): truncate in place
            directed_clamped = directed.clamp_(max=CLAMP)
            undirected_clamped = undirected_scaled.clamp_(max=CLAMP)
        return torch.cat(
            [
                directed_clamped.sum(dim=1).mul_(0.5),
                undirected_clamped.sum(dim=1).mul_(0.5),
                undirected_clamped.sum(dim=2).mul_(TEXTURE_FACTOR),
            ],
            dim=1,
        )

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        hist, undirected, factor, directed, undirected_scaled = ctx.saved_tensors
        n = undirected.shape[1]
        factors = _corners(factor)
        # The gradient reaching each unclamped product f_k h_c (and f_k u_c).
        through_directed = _below_clamp(directed).mul_(0.5 * grad[:, None, : 2 * n])
        upstream = (0.5 * grad[:, None, 2 * n : 3 * n]) + (TEXTURE_FACTOR * grad[:, 3 * n :, None])
        through_undirected = _below_clamp(undirected_scaled).mul_(upstream)
        grad_hist = (through_directed * factors).sum(dim=1)
        grad_undirected = (through_undirected * factors).sum(dim=1)
        grad_factors = torch.linalg.vecdot(through_directed, hist.unsqueeze(1), dim=2)
        grad_factors += torch.linalg.vecdot(through_undirected, undirected.unsqueeze(1), dim=2)
        # back through the corners' shifts, rsqrt, the block sums and the replicated border
        grad_factor = torch.zeros_like(factor)
        grad_factor[:, :-1, :-1] += grad_factors[:, 0]
        grad_factor[:, :-1, 1:] += grad_factors[:, 1]
        grad_factor[:, 1:, :-1] += grad_factors[:, 2]
        grad_factor[:, 1:, 1:] += grad_factors[:, 3]
        grad_block = grad_factor.mul_(factor.pow(3)).mul_(-0.5)
        grad_padded = _box_sums(torch.nn.functional.pad(grad_block, (1, 1, 1, 1)))
        rows = grad_padded[:, 1:-1].clone()
        rows[:, 0] += grad_padded[:, 0]
        rows[:, -1] += grad_padded[:, -1]
        grad_energy = rows[..., 1:-1].clone()
        grad_energy[..., 0] += rows[..., 0]
        grad_energy[..., -1] += rows[..., -1]
        grad_undirected.addcmul_(undirected, grad_energy.unsqueeze(1), value=2.0)
        grad_hist[:, :n] += grad_undirected
        grad_hist[:, n:] += grad_undirected
        return grad_hist
