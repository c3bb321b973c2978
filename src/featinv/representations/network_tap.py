"""Reaching into a network: the factory that builds it, the layer to stop at, its geometry.

The parts of ``featinv.representations.cnn`` that know nothing of featinv's representations:
building a network from an import path (``package.module:callable``) or a factory, cutting a
built-in ``nn.Sequential`` after a layer, stopping any other network's forward pass at a
layer with a hook, and the kernel and stride a layer moves the sampling grid by.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.ops import as_pair
from featinv.representations.architectures import ARCHITECTURES, PaddedMaxPool


class Stop(Exception):
    """Raised by the tap's hook: the forward pass ends at the tapped layer."""

    def __init__(self, output: Any) -> None:
        self.output = output


def stop_at_output(module: nn.Module, inputs: Any, output: Any) -> None:
    raise Stop(output)


def hub_checkpoint_dirs() -> list[Path]:
    """Where torch's hub keeps downloaded weights ($TORCH_HOME/hub/checkpoints and the default)."""
    places = [Path(torch.hub.get_dir()) / "checkpoints"]
    default = Path(os.path.expanduser("~/.cache/torch/hub/checkpoints"))
    return places + ([default] if default not in places else [])


def import_path(factory: Callable[..., Any]) -> str:
    """``package.module:qualname`` of a callable, as configs and checkpoints record it."""
    return f"{factory.__module__}:{factory.__qualname__}"


def import_factory(path: str | Callable[..., Any]) -> nn.Module:
    """``package.module:callable`` (or the callable itself) -> the ``nn.Module`` it returns.

    Raises:
        ValueError: the path is malformed, does not import, or does not give a module.
    """
    if callable(path) and not isinstance(path, nn.Module):
        network = path()
        if not isinstance(network, nn.Module):
            raise ValueError(
                f"architecture {import_path(path)} returned a {type(network).__name__}, "
                "not a torch nn.Module"
            )
        return network
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"architecture {path!r} is neither a built-in ({', '.join(ARCHITECTURES)}) nor an "
            "import path of the form package.module:callable"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"architecture {path!r} does not import: {error}") from None
    network = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"architecture {path!r} returned a {type(network).__name__}, not a torch nn.Module"
        )
    return network


def truncate(network: nn.Sequential, path: str) -> nn.Sequential:
    """The modules of a (nested) ``nn.Sequential`` up to and including ``path``, same names."""
    head, _, rest = path.partition(".")
    names = list(network._modules)
    kept = OrderedDict((name, network._modules[name]) for name in names[: names.index(head) + 1])
    if rest:
        kept[head] = truncate(kept[head], rest)
    return nn.Sequential(kept)


def kernel_and_stride(module: nn.Module, in_shape: torch.Size) -> tuple[int, int] | None:
    """(kernel, stride) of a module that moves the sampling grid, along the height."""
    if isinstance(module, nn.Conv2d):
        return module.dilation[0] * (module.kernel_size[0] - 1) + 1, module.stride[0]
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        kernel, stride = as_pair(module.kernel_size)[0], as_pair(module.stride)[0]
        return kernel, stride
    if isinstance(module, PaddedMaxPool):
        return module.kernel, module.stride
    if isinstance(module, nn.Flatten) and len(in_shape) == 4:
        return in_shape[2], 1  # a vector sees the whole map
    return None
