"""The decoder a network's layer gets by default: sized from the features it reads.

Plain functions of the feature shape and the image size; the decoders package builds from
the options they return (``Representation.decoder_defaults``).
"""

from __future__ import annotations

from typing import Any

from featinv.ops import as_pair

#: Training batches the decoder measures its feature statistics on.
STANDARDIZE_BATCHES = 20
#: The embedded default's crop side, and the narrowest map a layer is trained on when the
#: user sets no size: a deeper layer's crops are doubled (once) until its map is this wide.
EMBEDDED_SIDE = 64
MIN_TRAINING_MAP = 8


def training_side(output_shape: Any, min_side: int) -> int:
    """The crop side a layer trains at when the user sets none (``data.image_size: null``).

    The embedded default's 64 px, or the layer's smallest input if larger; a layer whose map
    is narrower than ``MIN_TRAINING_MAP`` there (VGG-16's conv5_3: 4x4, every unit seeing
    the whole crop and the zero padding around it) trains at 128 px, where its units see the
    parts and objects a network trained at 224 px responds to (docs/trained-networks.md has
    the measurement). ``output_shape`` maps a side to the features' shape.
    """
    side = max(EMBEDDED_SIDE, min_side)
    shape = output_shape(side)
    if len(shape) == 3 and min(shape[1:]) < MIN_TRAINING_MAP and side < 2 * EMBEDDED_SIDE:
        side = 2 * EMBEDDED_SIDE
    return side


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
    per channel (``featinv.decoders.standardize``). A deep layer's decoder trained on few
    photos is over-confident on others: its output is blended toward the training data's mean
    image by a weight calibrated on the validation photos (``featinv.decoders.prior_blend``).
    """
    if len(shape) != 3:
        return {"standardize": STANDARDIZE_BATCHES, "prior_blend": True}
    side = min(shape[1:])
    bottleneck = decoder_bottleneck(image_size)
    common = {
        "max_width": 256,
        "convs_per_level": 1,
        "standardize": STANDARDIZE_BATCHES,
        "prior_blend": True,
    }
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
