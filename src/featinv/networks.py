"""The networks of a trained inverter, from plain values: built, and loaded from a file's state.

Both file formats (a Lightning checkpoint, ``featinv.checkpoint``; an exported
``.safetensors``, ``featinv.exported``) hold the same two things: the plain values the
networks are built from and their tensors, under ``decoder.*`` and ``representation.*``.
``load_networks`` is the one place that turns those into Phi and its decoder. No Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from featinv.decoders import build_decoder
from featinv.reliability import NotAFeatinvCheckpointError
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


def state_part(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_networks(
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    origin: str,
    *,
    load_weights: bool = False,
    representation_complete: bool = True,
    extra_representation_keys: bool = True,
) -> tuple[Representation, nn.Module]:
    """Build Phi and the decoder from ``config`` and load their tensors from ``state``.

    Args:
        config: ``representation``, ``representation_options``, ``image_size``,
            ``decoder_options`` (a checkpoint's hyper-parameters or an exported file's
            metadata).
        state: tensors under ``decoder.*`` and ``representation.*``.
        origin: the file, named in errors.
        load_weights: Phi reads its network weights from the file its options name (an
            exported file without them); otherwise they come from ``state``.
        representation_complete: every tensor Phi has must be in ``state``.
        extra_representation_keys: tolerate tensors Phi does not have (featinv 0.1.0 kept a
            whole AlexNet; a network is now cut after its tapped layer).

    Raises:
        NotAFeatinvCheckpointError: the configuration does not build, or the tensors do not
            fit it; naming the first key that does not.
    """
    try:
        representation, decoder = build_networks(
            config["representation"],
            config.get("representation_options"),
            int(config["image_size"]),
            config.get("decoder_options"),
            load_weights=load_weights,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise NotAFeatinvCheckpointError(
            f"{origin}: its configuration does not build ({error})"
        ) from None
    try:
        decoder.load_state_dict(state_part(state, "decoder."))
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise NotAFeatinvCheckpointError(
            f"{origin}: its decoder weights do not fit its configuration "
            f"({' '.join(line.strip() for line in first[1:3])[:240]})"
        ) from None
    try:
        missing, unexpected = representation.load_state_dict(
            state_part(state, "representation."), strict=False
        )
    except RuntimeError as error:  # a tensor of the wrong shape
        reason = " ".join(line.strip() for line in str(error).splitlines()[1:3])
        raise NotAFeatinvCheckpointError(
            f"{origin}: its representation weights do not fit ({reason[:240]})"
        ) from None
    if representation_complete and missing:
        raise NotAFeatinvCheckpointError(
            f"{origin} lacks {len(missing)} weight(s) of its representation, e.g. "
            f"{missing[0]!r}: it was written for other networks"
        )
    if unexpected and not extra_representation_keys:
        raise NotAFeatinvCheckpointError(
            f"{origin}: representation weights do not fit (unexpected {unexpected[0]!r})"
        )
    return representation, decoder
