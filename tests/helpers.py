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


class TinyViT(torch.nn.Module):
    """A plain-PyTorch ViT (patch embedding, CLS and register tokens, learned position
    embeddings for one input size, pre-norm blocks, a linear head on the CLS token)."""

    def __init__(self, size: int, patch: int, dim: int, depth: int, registers: int) -> None:
        super().__init__()
        self.patch_embed = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.registers = torch.nn.Parameter(torch.randn(1, registers, dim) * 0.02)
        self.pos_embed = torch.nn.Parameter(torch.randn(1, (size // patch) ** 2, dim) * 0.02)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)
            for _ in range(depth)
        )
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, 10)

    def tokens(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """The tokens after the first ``blocks`` blocks: CLS, registers, then patches."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        batch = x.shape[0]
        prefix = [self.cls_token.expand(batch, -1, -1), self.registers.expand(batch, -1, -1)]
        tokens = torch.cat([*prefix, patches], dim=1)
        for block in self.blocks[:blocks]:
            tokens = block(tokens)
        return tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.tokens(x, len(self.blocks)))[:, 0])


def tiny_vit(size: int = 32, patch: int = 8, dim: int = 16, depth: int = 2, registers: int = 4):
    """``tests.helpers:tiny_vit``: a small ViT with CLS and 4 register tokens."""
    torch.manual_seed(0)
    return TinyViT(size, patch, dim, depth, registers).eval()


class ChannelsLast(torch.nn.Module):
    """A conv map given as ``(B, H, W, C)``, as Swin and ConvNeXt-style blocks give it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 24, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).permute(0, 2, 3, 1)


def channels_last_net() -> torch.nn.Module:
    """``tests.helpers:channels_last_net``."""
    torch.manual_seed(0)
    return ChannelsLast()
