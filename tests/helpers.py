"""Helpers shared by the test modules (imported from here only, never from a test file)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import torch

from featinv import save_checkpoint
from featinv.training import InversionModule


def train_steps(
    module: InversionModule, batch: dict[str, Any], steps: int, lr: float = 1e-3
) -> list[float]:
    """Adam on every trainable parameter, ``steps`` times on ``batch``; returns the losses.

    Uses the module's objective directly (no Trainer), so a test can watch the loss fall in
    a fraction of a second.
    """
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.reconstruction_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def trained_checkpoint(path: Path, steps: int = 3, **hparams: Any) -> Path:
    """A small *trained* featinv checkpoint: a few Adam steps on random images, then
    ``featinv.save_checkpoint`` (the layout the trainer writes)."""
    torch.manual_seed(0)
    module = InversionModule(**hparams)
    size = module.hparams.image_size
    train_steps(module, {"image": torch.rand(2, 3, size, size)}, steps)
    return save_checkpoint(path, module)


def add_member(shard: Path, name: str, data: bytes) -> None:
    """Append one file to a tar shard."""
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


class _CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        import builtins

        return (builtins.open, (self.path, "w"))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A file that looks like a featinv checkpoint but whose pickle would create ``marker``."""
    torch.save({"featinv": {"format": 1}, "state_dict": {}, "payload": _CreatesAFile(marker)}, path)
    return path


def tiny_net() -> torch.nn.Module:
    """A small network for tests that give a CNN by import path (``tests.helpers:tiny_net``)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)
    )
