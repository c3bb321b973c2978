"""A few optimizer steps of a module on one fixed batch (shared by the training tests)."""

from __future__ import annotations

from typing import Any

import torch

from featinv.training import InversionModule


def train_steps(
    module: InversionModule, batch: dict[str, Any], steps: int, lr: float = 1e-3
) -> list[float]:
    """Adam on every trainable parameter, ``steps`` times on ``batch``; returns the losses."""
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
