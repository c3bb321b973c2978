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
    pixel_norm2 = torch.linalg.vecdot(x, x, dim=1)
    return pixel_norm2.pow(alpha / 2).sum(dim=(1, 2)) / (height * width * bound**alpha)


def tv_beta(x: torch.Tensor, beta: float, typical_gradient: float) -> torch.Tensor:
    """Sect. 3.2.2, ``R_TV^beta(x) = 1/(H W V^beta) sum_uvk (dx^2 + dy^2)^(beta/2)``.

    Forward differences; the last row and column repeat (zero difference across the border).
    """
    height, width = x.shape[-2:]
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    squared = dx.square() + dy.square()
    # (.)^(beta/2) has an infinite derivative at 0 for beta < 2: keep flat pixels out.
    flat = squared == 0
    energy = torch.where(flat, 0.0, torch.where(flat, 1.0, squared).pow(beta / 2))
    return energy.sum(dim=(1, 2, 3)) / (height * width * typical_gradient**beta)


@torch.no_grad()
def natural_image_prior(
    x: torch.Tensor,
    alpha: float,
    bound: float,
    beta: float,
    typical_gradient: float,
    *,
    grad_into: torch.Tensor | None = None,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """``alpha_norm + tv_beta`` per image, and (into ``grad_into``, times ``grad_scale``) its
    gradient, written out: Algorithm 1 needs both at every iteration, and the formulas' own
    autograd graph costs several more passes over the image than these.

    The alpha-norm's gradient is ``alpha ||x(v,u,:)||^(alpha-2) x(v,u,:) / (H W B^alpha)``;
    TV-2's is ``2 / (H W V^2)`` times the differences' transposed stencil.
    """
    height, width = x.shape[-2:]
    alpha_scale = 1.0 / (height * width * bound**alpha)
    pixel_norm2 = torch.linalg.vecdot(x, x, dim=1)
    # ||x||^(alpha - 2): the gradient's factor, and ||x||^alpha = it * ||x||^2
    factor = pixel_norm2.pow(alpha / 2 - 1) if alpha != 2 else torch.ones_like(pixel_norm2)
    value = torch.linalg.vecdot(factor.flatten(1), pixel_norm2.flatten(1)) * alpha_scale
    if grad_into is not None:
        grad_into.addcmul_(x, factor.unsqueeze(1), value=alpha * alpha_scale * grad_scale)
    if beta != 2:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            tv = tv_beta(leaf, beta, typical_gradient)
            if grad_into is not None:
                grad_into.add_(torch.autograd.grad(tv.sum(), leaf)[0], alpha=grad_scale)
        return value + tv.detach()
    tv_scale = 1.0 / (height * width * typical_gradient**2)
    for dim in (-1, -2):
        length = x.shape[dim]
        diff = x.narrow(dim, 1, length - 1) - x.narrow(dim, 0, length - 1)
        flat = diff.flatten(1)
        value += torch.linalg.vecdot(flat, flat) * tv_scale
        if grad_into is not None:
            step = 2 * tv_scale * grad_scale
            grad_into.narrow(dim, 1, length - 1).add_(diff, alpha=step)
            grad_into.narrow(dim, 0, length - 1).sub_(diff, alpha=step)
    return value


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
