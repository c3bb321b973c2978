"""A network's weights from a local file: read without running code, loaded layer by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def read_state(path: Path) -> dict[str, Any]:
    """``{"state_dict", ["normalization"]}`` from a state dict or a ``featinv-convert-weights``
    output (tensors and plain values only: ``weights_only`` refuses anything else)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        return state
    return {"state_dict": state}


def load_matching(
    network: nn.Module, state: dict[str, torch.Tensor], source: str, architecture: str
) -> None:
    """Load the tensors ``network`` has from ``state``, which may hold more (a whole network
    for a network cut after its tapped layer).

    Raises:
        ValueError: naming the first missing key or the first mismatching shape.
    """
    expected = network.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(
                f"{source} is not a {architecture} state dict: key {key!r} is "
                f"missing (it has {', '.join(list(state)[:4])}, ...)"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{source}: {key!r} has shape {tuple(state[key].shape)}, "
                f"{architecture} expects {tuple(tensor.shape)}"
            )
    network.load_state_dict({k: state[k] for k in expected})


def missing_weights_message(architecture: str, looked: list[Path], hub: str | None) -> str:
    """What to do when no weights file was found, and where featinv looked."""
    where = "\n".join(f"  - {p}" for p in looked) or "  (nowhere: no path was given)"
    how = (
        f"download torchvision's {hub} on a machine with internet and copy it into one "
        "of those folders, or pass its path"
        if hub
        else "convert the network's weights into a state dict (featinv-convert-weights "
        "for MatConvNet .mat models; see README) and pass its path"
    )
    return (
        f"no {architecture} weights found; looked in:\n{where}\nTo fix: {how} with "
        "--model.representation_options.weights PATH (or weights: random for tests only)."
    )
