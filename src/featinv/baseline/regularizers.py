"""The natural-image prior of Mahendran & Vedaldi (IJCV 2016, Sect. 3.2), batched per image.

Every term returns one value per image, so a batch is many independent problems. Images are
in the paper's convention: ``(B, 3, H, W)``, 0-255 scale, mean subtracted.
"""

from __future__ import annotations

import torch


def alpha_norm(x: torch.Tensor, alpha: float, bound: float) -> torch.Tensor:
    """Eq. 5, the isotropic alpha-norm ``N_alpha(x) = 1/(H W B^alpha) sum_vu ||x(v,u,:)||^alpha``.

    Isotropic in RGB: the norm of each pixel's colour vector, not of each channel.
    """
    height, width = x.shape[-2:]
    pixel_norm2 = x.square().sum(dim=1)
    return pixel_norm2.pow(alpha / 2).sum(dim=(1, 2)) / (height * width * bound**alpha)


def tv_beta(x: torch.Tensor, beta: float, typical_gradient: float) -> torch.Tensor:
    """Sect. 3.2.2, ``R_TV^beta(x) = 1/(H W V^beta) sum_uvk (dx^2 + dy^2)^(beta/2)``.

    Forward differences; the last row and column repeat (zero difference across the border).
    """
    height, width = x.shape[-2:]
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    squared = dx.square() + dy.square()
    if beta == 2:
        energy = squared  # the default: no pow, and a clean gradient at 0
    else:
        # (.)^(beta/2) has an infinite derivative at 0 for beta < 2: keep flat pixels out.
        flat = squared == 0
        energy = torch.where(flat, 0.0, torch.where(flat, 1.0, squared).pow(beta / 2))
    return energy.sum(dim=(1, 2, 3)) / (height * width * typical_gradient**beta)


def project_to_ball(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Eq. 6's hard constraint: scale every pixel's RGB vector into the ball of radius B+."""
    norm = x.square().sum(dim=1, keepdim=True).sqrt()
    return x * (radius / norm.clamp_min(radius))


def normalized_loss(
    features: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 2 (and Eq. 3 with a binary mask): ``||(Phi(x) - Phi0) * M||^2 / ||Phi0 * M||^2``."""
    diff = features - target
    if mask is not None:
        diff, target = diff * mask, target * mask
    denominator = target.flatten(1).square().sum(dim=1).clamp_min(torch.finfo(target.dtype).tiny)
    return diff.flatten(1).square().sum(dim=1) / denominator
