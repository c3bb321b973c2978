"""The natural-image prior of Mahendran & Vedaldi (IJCV 2016, Sect. 3.2), batched per image.

Every term returns one value per image, so a batch is many independent problems. Images are
in the paper's convention: ``(B, 3, H, W)``, 0-255 scale, mean subtracted.
"""

from __future__ import annotations

from typing import Any

import torch


def alpha_norm(x: torch.Tensor, alpha: float, bound: float) -> torch.Tensor:
    """Eq. 5, the isotropic alpha-norm ``N_alpha(x) = 1/(H W B^alpha) sum_vu ||x(v,u,:)||^alpha``.

    Isotropic in RGB: the norm of each pixel's colour vector, not of each channel.
    """
    return _AlphaNorm.apply(x, alpha, bound)


class _AlphaNorm(torch.autograd.Function):
    """Eq. 5 with its gradient ``alpha ||x(v,u,:)||^(alpha-2) x(v,u,:) / (H W B^alpha)``, made
    from the same per-pixel norms in a few passes over the image (the baseline's every
    iteration pays for it)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float, bound: float) -> torch.Tensor:
        height, width = x.shape[-2:]
        scale = 1.0 / (height * width * bound**alpha)
        pixel_norm2 = torch.linalg.vecdot(x, x, dim=1)
        # ||x||^(alpha - 2): the gradient's factor, and ||x||^alpha = it * ||x||^2
        factor = pixel_norm2.pow(alpha / 2 - 1) if alpha != 2 else torch.ones_like(pixel_norm2)
        ctx.save_for_backward(x, factor)
        ctx.gain = alpha * scale
        return torch.linalg.vecdot(factor.flatten(1), pixel_norm2.flatten(1)) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, factor = ctx.saved_tensors
        return x * (factor * (grad * ctx.gain).view(-1, 1, 1)).unsqueeze(1), None, None


def tv_beta(x: torch.Tensor, beta: float, typical_gradient: float) -> torch.Tensor:
    """Sect. 3.2.2, ``R_TV^beta(x) = 1/(H W V^beta) sum_uvk (dx^2 + dy^2)^(beta/2)``.

    Forward differences; the last row and column repeat (zero difference across the border).
    """
    height, width = x.shape[-2:]
    if beta == 2:
        return _TV2.apply(x, 1.0 / (height * width * typical_gradient**2))
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    squared = dx.square() + dy.square()
    # (.)^(beta/2) has an infinite derivative at 0 for beta < 2: keep flat pixels out.
    flat = squared == 0
    energy = torch.where(flat, 0.0, torch.where(flat, 1.0, squared).pow(beta / 2))
    return energy.sum(dim=(1, 2, 3)) / (height * width * typical_gradient**beta)


class _TV2(torch.autograd.Function):
    """TV with beta = 2 (the default) and its gradient ``2 scale (dx(u-1) - dx(u) + dy(v-1) -
    dy(v))``, from the differences the forward pass keeps."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        dx, dy = torch.empty_like(x), torch.empty_like(x)
        torch.sub(x[..., :, 1:], x[..., :, :-1], out=dx[..., :, :-1])
        torch.sub(x[..., 1:, :], x[..., :-1, :], out=dy[..., :-1, :])
        dx[..., :, -1], dy[..., -1, :] = 0, 0
        ctx.save_for_backward(dx, dy)
        ctx.scale = scale
        flat_x, flat_y = dx.flatten(1), dy.flatten(1)
        return (torch.linalg.vecdot(flat_x, flat_x) + torch.linalg.vecdot(flat_y, flat_y)) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        dx, dy = ctx.saved_tensors
        out = torch.empty_like(dx)
        torch.sub(dx[..., :, :-1], dx[..., :, 1:], out=out[..., :, 1:])
        torch.neg(dx[..., :, 0], out=out[..., :, 0])
        out[..., 1:, :] += dy[..., :-1, :]
        return out.sub_(dy).mul_((grad * (2 * ctx.scale)).view(-1, 1, 1, 1)), None


def project_to_ball(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Eq. 6's hard constraint: scale every pixel's RGB vector into the ball of radius B+."""
    return x * ball_factor(x, radius)


def ball_factor(x: torch.Tensor, radius: float) -> torch.Tensor:
    """``(B, 1, H, W)``: what ``project_to_ball`` multiplies each pixel's RGB vector by."""
    norm = torch.linalg.vecdot(x, x, dim=1).unsqueeze(1).sqrt_()
    return norm.clamp_min_(radius).reciprocal_().mul_(radius)


def normalized_loss(
    features: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 2 (and Eq. 3 with a binary mask): ``||(Phi(x) - Phi0) * M||^2 / ||Phi0 * M||^2``."""
    diff = features - target
    if mask is not None:
        diff, target = diff * mask, target * mask
    denominator = target.flatten(1).square().sum(dim=1).clamp_min(torch.finfo(target.dtype).tiny)
    return diff.flatten(1).square().sum(dim=1) / denominator
