"""A network's weights from a local file: read without running code, loaded layer by layer."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.reliability import check_file_fits
from featinv.representations.keras import is_keras_file

#: Where training scripts keep a network's state dict inside a bigger checkpoint
#: (``{"model": ..., "optimizer": ..., "epoch": ...}``).
NESTED_STATE_KEYS = ("model", "model_state_dict", "net", "network")


def _foreign_format(path: Path) -> str | None:
    """What kind of file ``path`` is when it is a network's weights in a format that
    ``featinv-convert-weights`` converts, not a state dict."""
    if is_keras_file(path):
        return "Keras weights"
    with open(path, "rb") as stream:
        return "a MATLAB .mat file" if stream.read(6) == b"MATLAB" else None


def read_state(path: Path) -> dict[str, Any]:
    """``{"state_dict", ["normalization"]}`` from a state dict, a training checkpoint that holds
    one (under ``model``, ``model_state_dict``, ...), or a ``featinv-convert-weights`` output.

    Tensors and plain values only: ``weights_only`` refuses a pickle that names code before it
    runs, and a file whose contents would not fit in memory is refused before it is read.

    Raises:
        ValueError: one line saying what the file is and what to do with it.
    """
    foreign = _foreign_format(path)
    if foreign is not None:
        raise ValueError(
            f"{path} is {foreign}, not a state dict: convert it first "
            f"(featinv-convert-weights {path} OUT.pth) and pass OUT.pth"
        )
    check_file_fits(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not its own
        found = re.search(r"GLOBAL (\S+)", str(error))
        if isinstance(error, pickle.UnpicklingError) and found is not None:
            raise ValueError(
                f"{path} is not a state dict featinv can read without running code (loading "
                f"it would run `{found.group(1)}`): save the network's state_dict() (tensors "
                "only) and pass that file"
            ) from None
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        raise ValueError(
            f"{path} is not a readable weights file, a PyTorch state dict or .safetensors "
            f"({type(error).__name__}: {reason[:160]})"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    if "state_dict" in state:
        return state
    for key in NESTED_STATE_KEYS:
        if isinstance(state.get(key), dict):
            return {"state_dict": state[key]}
    return {"state_dict": state}


def _strip_prefix(state: dict[str, Any], expected: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``state`` with the prefix a wrapper added to every key removed (``module.`` from
    ``DataParallel``, ``model.`` from a LightningModule), when one fits every expected key."""
    first = next(iter(expected), None)
    if first is None or first in state:
        return state
    for key in state:
        if isinstance(key, str) and key.endswith("." + first):
            prefix = key[: -len(first)]
            if all(prefix + k in state for k in expected):
                return {k: state[prefix + k] for k in expected}
    return state


def load_matching(
    network: nn.Module, state: dict[str, torch.Tensor], source: str, architecture: str
) -> None:
    """Load the tensors ``network`` has from ``state``, which may hold more (a whole network
    for a network cut after its tapped layer).

    Raises:
        ValueError: naming the first missing key or the first mismatching shape.
    """
    expected = network.state_dict()
    state = _strip_prefix(state, expected)
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(
                f"{source} is not a {architecture} state dict: key {key!r} is "
                f"missing (it has {', '.join(map(str, list(state)[:4]))}, ...)"
            )
        if not isinstance(state[key], torch.Tensor):
            raise ValueError(
                f"{source}: {key!r} holds a value of type {type(state[key]).__name__}, not a tensor"
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
