"""The decoder a network's layer gets by default: sized from the features it reads.

Plain functions of the feature shape and the image size; the decoders package builds from
the options they return (``Representation.decoder_defaults``).
"""

from __future__ import annotations

from typing import Any

from featinv.ops import as_pair

#: Training batches the decoder measures its feature statistics on.
STANDARDIZE_BATCHES = 20


def decoder_bottleneck(image_size: int | tuple[int, int]) -> int:
    """The side a network's feature map is contracted to before the up-convolutions: 8 at
    small crops, 1/16 of the image at larger ones (14 at 224 px, AlexNet's conv5 at 227)."""
    return max(8, min(as_pair(image_size)) // 16)


def fitted_decoder(shape: tuple[int, ...], image_size: int | tuple[int, int]) -> dict[str, Any]:
    """A decoder whose cost fits the map it reads; vectors get Table 1's decoder.

    Sect. 2.2 inverts AlexNet's conv layers (13x13 and coarser at 227 px) with three
    convolutions and then up-convolutions, no contraction. A map finer than
    ``decoder_bottleneck`` (an early layer, stride 1 or 2) would make those convolutions cost
    hundreds of times more per image than the network's own layers: it is first contracted
    to that side by stride-2 convolutions, starting narrower the finer it is (the width
    doubles with each halving), so every layer costs about the same. Network features are
    far from unit scale (trained ones large and heavy-tailed): the decoder standardizes them
    per channel (``featinv.decoders.standardize``).
    """
    if len(shape) != 3:
        return {"standardize": STANDARDIZE_BATCHES}
    side = min(shape[1:])
    bottleneck = decoder_bottleneck(image_size)
    common = {"max_width": 256, "convs_per_level": 1, "standardize": STANDARDIZE_BATCHES}
    if side <= bottleneck:
        return {**common, "num_convs": 3, "min_bottleneck": side, "width": 256}
    width = min(max(256 * bottleneck // side, 32), 256)
    return {**common, "num_convs": 1, "min_bottleneck": bottleneck, "width": width}


def paper_decoder(shape: tuple[int, ...]) -> dict[str, Any]:
    """Sect. 2.2 as the paper built it for AlexNet: maps -> three convolutions, then
    up-convolutions (no contraction); vectors -> Table 1's decoder. featinv 0.2 built it for
    every network, so files of that version are completed with it."""
    if len(shape) != 3:
        return {"standardize": STANDARDIZE_BATCHES}
    return {
        "num_convs": 3,
        "min_bottleneck": min(shape[1:]),
        "width": 256,
        "max_width": 256,
        "standardize": STANDARDIZE_BATCHES,
    }
