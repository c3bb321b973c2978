"""Inversion networks: plain ``nn.Module``s, chosen from the representation's output shape."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from featinv.decoders.fully_connected import FullyConnectedDecoder
from featinv.decoders.spatial import SpatialDecoder
from featinv.representations.base import Representation


def decoder_class(representation: Representation, image_size: int) -> type[nn.Module]:
    """``SpatialDecoder`` for feature maps, ``FullyConnectedDecoder`` for vectors (Table 1).

    Raises:
        ValueError: for feature shapes no decoder handles.
    """
    shape = representation.output_shape(image_size)
    if len(shape) == 3:
        return SpatialDecoder
    if len(shape) == 1:
        return FullyConnectedDecoder
    raise ValueError(
        f"no decoder for features of shape {shape} from representation {representation.name!r}"
    )


def _settable(decoder: type) -> dict[str, Any]:
    """The decoder's options (not its sizes) and their defaults."""
    parameters = inspect.signature(decoder.__init__).parameters
    sizes = {"self", "in_channels", "in_size", "image_size", "in_features"}
    return {name: p.default for name, p in parameters.items() if name not in sizes}


def complete_decoder_options(
    representation: Representation,
    image_size: int,
    options: dict[str, Any] | None = None,
    legacy: bool = False,
) -> dict[str, Any]:
    """Every option of the decoder that inverts ``representation`` at ``image_size``: the
    decoder's own defaults, then the representation's ``decoder_defaults``, then ``options``.

    Files record the complete options, so a decoder rebuilds the same whatever later versions
    choose as defaults. ``legacy``: options saved by featinv 0.2 and earlier, which recorded
    only what the user set, completed with the defaults of that time
    (``Representation.legacy_decoder_defaults``); options already complete are kept as they are.
    """
    options = dict(options or {})
    settable = _settable(decoder_class(representation, image_size))
    if set(settable) <= set(options):
        return options
    defaults = (
        representation.legacy_decoder_defaults(image_size)
        if legacy
        else representation.decoder_defaults(image_size)
    )
    return {**settable, **defaults, **options}


def build_decoder(representation: Representation, image_size: int, **options: Any) -> nn.Module:
    """The decoder that inverts ``representation`` at ``image_size`` (Sect. 2.2, Table 1).

    Spatial feature maps get a ``SpatialDecoder``, vectors a ``FullyConnectedDecoder``
    (Table 1). The representation's ``decoder_defaults`` come first, ``options`` override them.

    Raises:
        ValueError: for feature shapes no decoder handles, or an option it does not take.
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
    valid = set(_settable(decoder))
    for key, value in options.items():
        if key == "prior_blend":  # the one switch
            if not isinstance(value, bool):
                raise ValueError(f"decoder option prior_blend must be true or false, got {value!r}")
            continue
        # every other option counts or sizes something; 0 turns standardization off
        least = 0 if key in ("convs_per_level", "standardize") else 1
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


__all__ = [
    "FullyConnectedDecoder",
    "SpatialDecoder",
    "build_decoder",
    "complete_decoder_options",
    "decoder_class",
]
