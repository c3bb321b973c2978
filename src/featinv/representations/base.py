"""The representation interface (the Phi of the papers) and its registry.

A representation is a plain ``nn.Module`` that maps images in the project convention (float32
RGB, NCHW, values in [0, 1]) to features. It does its own preprocessing (grey conversion, mean
subtraction) so that callers never need to know what it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

#: Luma weights of MATLAB's ``rgb2gray`` (ITU-R BT.601), which VLFeat's MATLAB examples --
#: and so the papers -- used to make the grey input of HOG, LBP and SIFT.
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """Convert RGB images ``(B, 3, H, W)`` to grey ``(B, 1, H, W)`` with MATLAB's weights."""
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def check_images(images: torch.Tensor, min_size: int, name: str) -> None:
    """Raise a ``ValueError`` that says what is wrong with an image batch, if anything is."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} expects images of shape (batch, 3, height, width) (RGB in [0, 1]), "
            f"got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"{name} expects floating-point images in [0, 1], got {images.dtype}")
    height, width = images.shape[-2:]
    if min(height, width) < min_size:
        raise ValueError(
            f"{name} needs images of at least {min_size}x{min_size} pixels, got {height}x{width}"
        )


class Representation(nn.Module):
    """Base class of every featurizer Phi.

    Subclasses set ``name`` and ``differentiable`` and implement ``forward`` and
    ``output_shape``. ``runs_in_loader`` is true for representations computed on the CPU in the
    data loader (SIFT) rather than on the device inside the training step.
    """

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    runs_in_loader: ClassVar[bool] = False
    #: The smallest image side the representation accepts.
    min_image_size: ClassVar[int] = 4

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, ...]:
        """Shape of one image's features (without the batch dimension)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The plain values that rebuild this representation with ``build_representation``."""
        raise NotImplementedError

    def decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Decoder options this representation's paper architecture needs (users override)."""
        return {}


_REGISTRY: dict[str, Callable[..., Representation]] = {}


def register(name: str) -> Callable[[type[Representation]], type[Representation]]:
    """Class decorator that makes a representation buildable by name."""

    def decorate(cls: type[Representation]) -> type[Representation]:
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_representations() -> list[str]:
    """Names accepted by ``build_representation``."""
    return sorted(_REGISTRY)


def build_representation(name: str, **options: Any) -> Representation:
    """Build a representation from its registered name and plain option values.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in _REGISTRY:
        valid = ", ".join(available_representations())
        raise ValueError(f"unknown representation {name!r}; valid names: {valid}")
    return _REGISTRY[name](**options)


def as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)
