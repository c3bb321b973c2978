"""Inversion networks: plain ``nn.Module``s, chosen from the representation's output shape."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from featinv.decoders.fully_connected import FullyConnectedDecoder
from featinv.decoders.spatial import SpatialDecoder
from featinv.representations.base import Representation


def build_decoder(representation: Representation, image_size: int, **options: Any) -> nn.Module:
    """The decoder that inverts ``representation`` at ``image_size`` (Sect. 2.2, Table 1).

    Spatial feature maps get a ``SpatialDecoder``, vectors a ``FullyConnectedDecoder``
    (Table 1). The representation's ``decoder_defaults`` come first, ``options`` override them.

    Raises:
        ValueError: for feature shapes no decoder handles.
    """
    shape = representation.output_shape(image_size)
    options = {**representation.decoder_defaults(image_size), **options}
    if len(shape) == 3:
        _check_options(SpatialDecoder, options, representation.name, shape)
        channels, height, width = shape
        return SpatialDecoder(channels, (height, width), image_size, **options)
    if len(shape) == 1:
        _check_options(FullyConnectedDecoder, options, representation.name, shape)
        return FullyConnectedDecoder(shape[0], **options)
    raise ValueError(
        f"no decoder for features of shape {shape} from representation {representation.name!r}"
    )


def _check_options(
    decoder: type, options: dict[str, Any], name: str, shape: tuple[int, ...]
) -> None:
    valid = set(inspect.signature(decoder.__init__).parameters) - {"self", "in_channels"}
    valid -= {"in_size", "image_size", "in_features"}
    for key, value in options.items():
        least = 0 if key == "convs_per_level" else 1  # every option counts or sizes something
        if key in valid and (
            not isinstance(value, int) or isinstance(value, bool) or value < least
        ):
            raise ValueError(
                f"decoder option {key} must be an integer of at least {least}, got {value!r}"
            )
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"decoder option(s) {', '.join(unknown)} do not apply to the {decoder.__name__} that "
            f"inverts {name} features of shape {shape}; valid "
            f"options: {', '.join(sorted(valid))} (set model.decoder_options, or use the "
            "representation's config in configs/)"
        )


__all__ = ["FullyConnectedDecoder", "SpatialDecoder", "build_decoder"]
