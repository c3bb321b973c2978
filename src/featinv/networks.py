"""Building the networks of a trained inverter from plain values (no Lightning needed)."""

from __future__ import annotations

from typing import Any

from torch import nn

from featinv.decoders import build_decoder
from featinv.representations import Representation, build_representation


def build_networks(
    representation: str,
    representation_options: dict[str, Any] | None,
    image_size: int,
    decoder_options: dict[str, Any] | None,
    load_weights: bool = True,
) -> tuple[Representation, nn.Module]:
    """The representation Phi and the decoder that inverts it at ``image_size``.

    ``load_weights=False`` builds a Phi that reads weights (AlexNet) without reading them, for
    a caller that loads them from a checkpoint next.

    Raises:
        ValueError: an unknown name or option, or an image too small for the representation.
    """
    phi = build_representation(
        representation, load_weights=load_weights, **(representation_options or {})
    )
    if image_size < phi.min_image_size:
        raise ValueError(
            f"image_size must be at least {phi.min_image_size} for {phi.label}, got {image_size}"
        )
    decoder = build_decoder(phi, image_size, **(decoder_options or {}))
    return phi, decoder
