"""Reaching into a network: the factory that builds it, the layer to stop at, its geometry.

The parts of ``featinv.representations.cnn`` that know nothing of featinv's representations:
building a network from an import path (``package.module:callable``) or a factory, cutting a
built-in ``nn.Sequential`` after a layer, stopping any other network's forward pass at a
layer with a hook, and the kernel and stride a layer moves the sampling grid by.
"""

from __future__ import annotations

import importlib
import inspect
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


class RefusedSize(ValueError):
    """The network refuses an input size (a transformer built for another size)."""


class LayerNeverRan(ValueError):
    """The forward pass ended without reaching the tapped layer."""


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


def import_factory(
    path: str | Callable[..., Any], options: dict[str, Any] | None = None
) -> nn.Module:
    """``package.module:callable`` (or the callable itself) called with ``options`` -> the
    ``nn.Module`` it returns. The callable may be an attribute path (``ViTModel.from_pretrained``).

    Raises:
        ValueError: the path is malformed or does not import, the callable does not take an
            option, calling it fails, or it does not give a module.
    """
    options = dict(options or {})
    if callable(path) and not isinstance(path, nn.Module):
        factory, name = path, import_path(path)
    else:
        factory, name = _resolve(str(path)), str(path)
    if isinstance(factory, nn.Module) or not callable(factory):
        if options:
            raise ValueError(
                f"architecture {name} is a {type(factory).__name__}, not a callable: "
                "architecture_options do not apply to it"
            )
        network = factory
    else:
        _check_arguments(factory, options, name)
        try:
            network = factory(**options)
        except Exception as error:  # the user's code: any failure is reported as one line
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"architecture {name} failed to build ({type(error).__name__}: {first[:300]})"
            ) from None
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"architecture {name} returned a {type(network).__name__}, not a torch nn.Module"
        )
    return network


def _resolve(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"architecture {path!r} is neither a built-in ({', '.join(ARCHITECTURES)}) nor an "
            "import path of the form package.module:callable"
        )
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"architecture {path!r} does not import: {error}") from None
    return value


def _check_arguments(factory: Callable[..., Any], options: dict[str, Any], name: str) -> None:
    """Refuse, before calling, options the callable does not take, listing those it does."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    try:
        signature.bind(**options)
    except TypeError as error:
        takes = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise ValueError(
            f"architecture {name} cannot be called with architecture_options "
            f"{sorted(options)} ({error}); it takes: {', '.join(takes) or 'no options'}"
        ) from None


def built_for_size(network: nn.Module) -> int | None:
    """The input side a network says it was built for (Hugging Face ``config.image_size``,
    timm's ``pretrained_cfg``, an ``img_size`` or ``image_size`` attribute), if it says one."""
    config = getattr(network, "config", None)
    candidates = [
        getattr(config, "image_size", None),
        (getattr(network, "pretrained_cfg", None) or {}).get("input_size", [None])[-1],
        getattr(network, "img_size", None),
        getattr(network, "image_size", None),
        getattr(getattr(network, "patch_embed", None), "img_size", None),
    ]
    for value in candidates:
        if isinstance(value, list | tuple) and value:
            value = value[-1]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


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


#: Names a network's first input has when it is not pixels.
NOT_PIXELS = ("input_ids", "ids", "text", "tokens", "token_ids", "attention_mask")


def check_takes_pixels(network: nn.Module, name: str) -> None:
    """Refuse a network whose forward needs inputs other than one batch of images.

    Raises:
        ValueError: naming the inputs it needs.
    """
    try:
        parameters = list(inspect.signature(network.forward).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional and positional[0].name in NOT_PIXELS:
        raise ValueError(
            f"architecture {name} takes {positional[0].name} first, not pixels: featinv gives a "
            "network one batch of images; use its vision part (e.g. CLIPVisionModelWithProjection "
            "rather than CLIPModel)"
        )
    required = [
        p.name
        for p in parameters[1:]
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if required:
        raise ValueError(
            f"architecture {name} needs inputs other than pixels ({', '.join(required)}): "
            "featinv gives a network one batch of images only"
        )


def grid_geometry(
    network: nn.Module, run: Callable[[torch.Tensor], Any], images: torch.Tensor
) -> tuple[Any, int | None, int]:
    """``run(images)`` while recording how each layer moves the sampling grid: its output,
    the stride at its end (``None`` when no layer strides or pools) and the receptive field."""
    steps: list[tuple[int, int]] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            geometry = kernel_and_stride(module, inputs[0].shape)
            if geometry is not None:
                steps.append(geometry)

    leaves = [m for m in network.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    try:
        output = run(images)
    finally:
        for hook in hooks:
            hook.remove()
    receptive_field, jump = 1, 1
    for kernel, stride in steps:
        receptive_field += (kernel - 1) * jump
        jump *= stride
    return output, (jump if steps else None), receptive_field
