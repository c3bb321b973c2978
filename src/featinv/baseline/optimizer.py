"""Algorithm 1 of Mahendran & Vedaldi (IJCV 2016, Sect. 3.4): AdaGrad with momentum."""

from __future__ import annotations

import torch


class AdaGradMomentum:
    """The pre-image optimizer of Algorithm 1, component-wise (so images never interact).

    ``G_t = rho G_{t-1} + g_t^2``; ``eta_t = 1 / (1/eta_0 + sqrt(G_t))``;
    ``mu_t = rho mu_{t-1} - eta_t g_t``; ``x_{t+1} = Pi(x_t + mu_t)``.

    Args:
        x: the variable, updated in place.
        lr: eta_0 (the paper: ``0.01 B^2 / alpha``).
        rho: the forgetting factor of both the squared gradients and the momentum (0.9).
    """

    def __init__(self, x: torch.Tensor, lr: float, rho: float = 0.9) -> None:
        self.x = x
        self.lr = lr
        self.rho = rho
        self.squared = torch.zeros_like(x)
        self.momentum = torch.zeros_like(x)
        self._buffer = torch.empty_like(x)

    @torch.no_grad()
    def step(self, gradient: torch.Tensor) -> None:
        """Steps 5-8 without the projection (applied by the caller)."""
        self.squared.mul_(self.rho).addcmul_(gradient, gradient)
        # 1 / eta_t in a buffer: the step is a few passes over memory, none of them spare
        inverse_rate = torch.sqrt(self.squared, out=self._buffer).add_(1.0 / self.lr)
        self.momentum.mul_(self.rho).addcdiv_(gradient, inverse_rate, value=-1)
        self.x.add_(self.momentum)
