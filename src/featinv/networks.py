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

from featinv.decoders import build_decoder, complete_decoder_options
from featinv.reliability import (
    NotAFeatinvCheckpointError,
    UntrustedCheckpointError,
    available_memory,
)
from featinv.representations import Representation, build_representation, representation_class

#: The largest image side a decoder file may describe (the networks are built at it).
MAX_FILE_IMAGE_SIZE = 4096

#: What the refusal of a file that names code tells the user.
CODE_HINT = (
    "Nothing was imported. If you know this network, pass it yourself: "
    "Inverter.load(path, architecture='{path}') or your factory function, --architecture "
    "{path} on the command line; or, for a file whose origin you trust, "
    "trust_checkpoint=True / --trust-checkpoint"
)


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
    decoder = build_decoder(
        phi, image_size, **complete_decoder_options(phi, image_size, decoder_options)
    )
    return phi, decoder


def state_part(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def named_code(config: Mapping[str, Any], origin: str) -> str | None:
    """The import path a file's configuration would make featinv import, if any."""
    try:
        cls = representation_class(str(config["representation"]))
    except (KeyError, ValueError) as error:
        raise NotAFeatinvCheckpointError(f"{origin}: {error}") from None
    options = config.get("representation_options") or {}
    if not isinstance(options, Mapping):
        raise NotAFeatinvCheckpointError(
            f"{origin}: representation_options must be a mapping, got {type(options).__name__}"
        )
    return cls.code_named_by(dict(options))


def _checked_config(
    config: Mapping[str, Any], origin: str, architecture: Any, trust: bool
) -> dict[str, Any]:
    """The configuration to build from: refused if it names code the user did not give or
    trust, or sizes that cannot be meant; the user's ``architecture`` in place of the file's."""
    config = dict(config)
    options = dict(config.get("representation_options") or {})
    path = named_code(config, origin)
    if path is not None and architecture is not None:
        options["architecture"] = architecture  # the user's network: the file names nothing run
    elif path is not None and not trust:
        raise UntrustedCheckpointError(
            f"refused {origin}: its representation names code to import and call, "
            f"architecture {path!r}. " + CODE_HINT.format(path=path)
        )
    config["representation_options"] = options
    size = config.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_FILE_IMAGE_SIZE:
        raise NotAFeatinvCheckpointError(
            f"{origin}: image_size must be an integer from 1 to {MAX_FILE_IMAGE_SIZE}, got {size!r}"
        )
    decoder_options = config.get("decoder_options") or {}
    if not isinstance(decoder_options, Mapping):
        raise NotAFeatinvCheckpointError(f"{origin}: decoder_options must be a mapping")
    return config


def _check_decoder_fits(
    representation: Representation,
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    origin: str,
) -> None:
    """Build the decoder without memory (meta device) and check it against the file's
    tensors and the machine's memory before anything is allocated."""
    with torch.device("meta"):
        shapes = build_decoder(
            representation, int(config["image_size"]), **(config.get("decoder_options") or {})
        ).state_dict()
    given = state_part(state, "decoder.")
    for key, tensor in shapes.items():
        part = key.split(".", 1)[0] + "."
        if part in ("standardize.", "blend.") and not any(k.startswith(part) for k in given):
            continue  # a decoder saved before that part existed: it loads as the identity
        if key not in given:
            raise NotAFeatinvCheckpointError(
                f"{origin}: its decoder weights do not fit its configuration (missing {key!r})"
            )
        if tuple(given[key].shape) != tuple(tensor.shape):
            raise NotAFeatinvCheckpointError(
                f"{origin}: its decoder weights do not fit its configuration ({key!r} has "
                f"shape {tuple(given[key].shape)}, the configuration needs {tuple(tensor.shape)})"
            )
    extra = sorted(set(given) - set(shapes))
    if extra:
        raise NotAFeatinvCheckpointError(
            f"{origin}: its decoder weights do not fit its configuration (unexpected {extra[0]!r})"
        )
    needed = sum(t.numel() * t.element_size() for t in shapes.values())
    free = available_memory()
    if free is not None and needed > free:
        raise NotAFeatinvCheckpointError(
            f"{origin}: its decoder needs {needed / 2**30:.1f} GiB, more than the "
            f"{free / 2**30:.1f} GiB of memory available"
        )


def load_networks(
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    origin: str,
    *,
    load_weights: bool = False,
    representation_complete: bool = True,
    extra_representation_keys: bool = True,
    architecture: Any = None,
    trust: bool = False,
) -> tuple[Representation, nn.Module, dict[str, Any]]:
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
        architecture: the network the user names (an import path or a factory), in place of
            the import path the file names (a file of a built-in network keeps its own).
        trust: build what the file names even if that imports code (files you trust).

    Returns:
        Phi, the decoder, and the configuration they were built from.

    Raises:
        UntrustedCheckpointError: the file names code to import and neither ``architecture``
            nor ``trust`` was given; nothing was imported.
        NotAFeatinvCheckpointError: the configuration does not build, asks for more memory
            than there is, or the tensors do not fit it; naming the first key that does not.
    """
    config = _checked_config(config, origin, architecture, trust)
    try:
        representation = build_representation(
            config["representation"],
            load_weights=load_weights,
            **config["representation_options"],
        )
        if config["image_size"] < representation.min_image_size:
            raise ValueError(
                f"image_size must be at least {representation.min_image_size} for "
                f"{representation.label}, got {config['image_size']}"
            )
        # files of featinv 0.2 and earlier hold only the options the user set
        config["decoder_options"] = complete_decoder_options(
            representation, config["image_size"], config.get("decoder_options"), legacy=True
        )
        _check_decoder_fits(representation, config, state, origin)
        decoder = build_decoder(
            representation, config["image_size"], **(config.get("decoder_options") or {})
        )
    except (KeyError, TypeError, ValueError) as error:
        raise NotAFeatinvCheckpointError(
            f"{origin}: its configuration does not build ({error})"
        ) from None
    decoder.load_state_dict(state_part(state, "decoder."))
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
    return representation, decoder, config
