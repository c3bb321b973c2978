"""Inversion networks: plain ``nn.Module``s, chosen from the representation's output shape."""

from __future__ import annotations

from typing import Any

from torch import nn

from featinv.decoders.spatial import SpatialDecoder
from featinv.representations.base import Representation


def build_decoder(representation: Representation, image_size: int, **options: Any) -> nn.Module:
    """The decoder that inverts ``representation`` at ``image_size`` (DESIGN.md, section 3).

    Spatial feature maps get a ``SpatialDecoder``; ``options`` are its keyword arguments.

    Raises:
        ValueError: for feature shapes no decoder handles.
    """
    shape = representation.output_shape(image_size)
    if len(shape) == 3:
        channels, height, width = shape
        return SpatialDecoder(channels, (height, width), image_size, **options)
    raise ValueError(
        f"no decoder for features of shape {shape} from representation {representation.name!r}"
    )


__all__ = ["SpatialDecoder", "build_decoder"]
