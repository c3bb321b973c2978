"""Building the networks of a trained inverter from plain values (no Lightning needed)."""

from __future__ import annotations

from typing import Any

from torch import nn

from featinv.decoders import build_decoder
from featinv.representations import build_representation

#: Written into every checkpoint so that loaders can tell a featinv checkpoint from others.
CHECKPOINT_FORMAT = 1


def build_networks(
    representation: str,
    representation_options: dict[str, Any] | None,
    image_size: int,
    decoder_options: dict[str, Any] | None,
) -> tuple[nn.Module, nn.Module]:
    """The representation Phi and the decoder that inverts it at ``image_size``."""
    phi = build_representation(representation, **(representation_options or {}))
    decoder = build_decoder(phi, image_size, **(decoder_options or {}))
    return phi, decoder
