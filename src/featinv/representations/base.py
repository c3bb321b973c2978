"""The representation interface (the Phi of the papers) and its registry.

A representation is a plain ``nn.Module`` that maps images in the project convention (float32
RGB, NCHW, values in [0, 1]) to features. It does its own preprocessing (grey conversion, mean
subtraction) so that callers never need to know what it expects.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from featinv.ops import as_pair
from featinv.reliability import OptionError

#: The largest crop side that gets ``SMALL_IMAGE_DECODER`` (see ``decoder_defaults``).
SMALL_IMAGE_SIDE = 96

#: The spatial decoder for small crops (the embedded default's 64 px).
SMALL_IMAGE_DECODER = {
    "width": 128,
    "max_width": 256,
    "min_width": 32,
    "min_bottleneck": 8,
    "convs_per_level": 1,
}


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
    """Base class of every featurizer Phi; what the rest of featinv asks of one is said here.

    Subclasses set the class attributes below, implement ``forward``, ``output_shape`` and
    ``config``, and register with ``@register`` (the name comes from ``name``). Nothing outside
    a representation's own module branches on its name: callers read these attributes.
    """

    #: Registered name (``build_representation(name)``); unique.
    name: ClassVar[str] = ""
    #: Gradients flow through ``forward``: the optimization baseline can invert it.
    differentiable: ClassVar[bool] = False
    #: Computed on the CPU in the data loader (SIFT) rather than on the device in the step.
    runs_in_loader: ClassVar[bool] = False
    #: Its constructor reads a weights file (``load_weights=False`` builds it without).
    loads_weights: ClassVar[bool] = False
    #: The smallest image side the representation accepts.
    min_image_size: ClassVar[int] = 4
    #: The image side it is evaluated at when nothing else says (a trained decoder's crop
    #: size always wins).
    default_image_size: ClassVar[int] = 64
    #: For a network tapped at one of several layers: the layers, input to output.
    layers: ClassVar[tuple[str, ...]] = ()
    #: For one that runs in the loader: the shard field (``KEY.FIELD``) holding what it stores
    #: per image (``featinv-shards --features NAME``); ``None``: it stores nothing.
    stored_field: ClassVar[str | None] = None
    #: Adam's betas for its decoder when the user sets none: the paper's (0.9, 0.999). A
    #: network's features (``CNN``) take beta2 = 0.99: they are heavy-tailed, the decoder's
    #: gradients on them grow by orders of magnitude within a few steps, and with 0.999 Adam's
    #: second moment lags them long enough to diverge (docs/trained-networks.md). Dosovitskiy
    #: & Brox found lr 1e-3 "to work well" for "most networks" (Sect. 2.2), not all.
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)

    @property
    def label(self) -> str:
        """Short display name for reports and figures (``hog``, ``alexnet-conv3``)."""
        return self.name

    @property
    def layer_names(self) -> tuple[str, ...]:
        """This instance's network's layers, input to output (empty: not a layered network)."""
        return type(self).layers

    @property
    def network_name(self) -> str:
        """The network a layer belongs to, for figures (``AlexNet``, ``vgg16``)."""
        return type(self).__name__

    @property
    def class_scores(self) -> bool:
        """Whether the features are ImageNet class scores (the top-5 analysis needs them)."""
        return False

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, ...]:
        """Shape of one image's features (without the batch dimension)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The plain values that rebuild this representation with ``build_representation``."""
        raise NotImplementedError

    def training_image_size(self) -> int:
        """The crop side ``python train.py`` trains at when ``data.image_size`` is null: the
        embedded default's 64 px (the smallest the representation accepts, if larger)."""
        return max(64, self.min_image_size)

    def decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Decoder options this representation's architecture needs (users override).

        At the paper's 256-pixel crops the spatial decoder's own defaults are the paper's
        architecture (Sect. 2.2). Crops of at most ``SMALL_IMAGE_SIDE`` pixels (the embedded
        default's 64) keep an 8x8 bottleneck and a 3x3 convolution after each up-convolution:
        the paper's 1/64 contraction would be 1x1 there and learn little more than the mean
        colour (docs/default.md has the measurement).
        """
        small = min(as_pair(image_size)) <= SMALL_IMAGE_SIDE
        return (
            dict(SMALL_IMAGE_DECODER) if small and len(self.output_shape(image_size)) == 3 else {}
        )

    def legacy_decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """The defaults featinv 0.2 and earlier completed a file's decoder options with (those
        files recorded only the options the user set)."""
        return {}

    @classmethod
    def code_named_by(cls, options: dict[str, Any]) -> str | None:
        """The import path ``options`` would make this representation import and call, if
        any (a network given as ``package.module:callable``). Loaders of files refuse such
        options unless the user names the code or trusts the file."""
        return None

    def encode_stored(self, rgb: np.ndarray) -> bytes:
        """What the shard writer stores under ``stored_field`` for one ``(H, W, 3)`` uint8
        image: computed once there instead of in every epoch's loader workers."""
        raise NotImplementedError(f"{self.label} stores nothing in shards")

    def loader_features(
        self,
        crop: np.ndarray,
        stored: bytes | None = None,
        window: tuple[int, int] | None = None,
        key: str = "?",
    ) -> np.ndarray:
        """The features of a loader's ``(H, W, 3)`` uint8 crop (loader representations).

        Args:
            stored: what ``encode_stored`` wrote for the whole image, if the shard has it.
            window: ``(top, left)`` of the crop in that image when the crop is a plain
                window of it (not resized, not flipped); ``None`` otherwise.
            key: the sample's key, for messages.
        """
        raise NotImplementedError(f"{self.label} is computed on the device, not in the loader")

    def baseline_defaults(self) -> dict[str, Any]:
        """Options of the optimization baseline that Mahendran & Vedaldi set per
        representation (Sect. 5.1-5.2: the loss weight ``c`` and the jitter range)."""
        return {}


_REGISTRY: dict[str, type[Representation]] = {}


def register(cls: type[Representation]) -> type[Representation]:
    """Class decorator that makes a representation buildable by its ``name``.

    Raises:
        ValueError: for a class without a name, or a name already taken by another class.
    """
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name: set the class attribute `name`")
    taken = _REGISTRY.get(cls.name)
    if taken is not None and taken is not cls:
        raise ValueError(
            f"representation name {cls.name!r} is taken by {taken.__module__}."
            f"{taken.__qualname__}; choose another name for {cls.__module__}.{cls.__qualname__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def available_representations() -> list[str]:
    """Names accepted by ``build_representation``."""
    return sorted(_REGISTRY)


def representation_class(name: str) -> type[Representation]:
    """The registered class of ``name``, to read its attributes without building it.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in _REGISTRY:
        valid = ", ".join(available_representations())
        raise ValueError(f"unknown representation {name!r}; valid names: {valid}")
    return _REGISTRY[name]


def training_image_size(name: str, options: dict[str, Any] | None = None) -> int:
    """``Representation.training_image_size`` of a representation given by name and options,
    built without reading its weights (the size depends on the shape alone).

    Raises:
        OptionError: an unknown name or a bad option, in one line.
    """
    try:
        phi = build_representation(name, load_weights=False, **(options or {}))
    except (TypeError, ValueError) as error:
        raise OptionError(f"model: {error}") from None
    return phi.training_image_size()


def build_representation(name: str, *, load_weights: bool = True, **options: Any) -> Representation:
    """Build a representation from its registered name and plain option values.

    Args:
        name: a name from ``available_representations()``.
        load_weights: for a representation that ``loads_weights``, ``False`` builds it with
            its weights uninitialized, for a caller that loads them next (from a checkpoint).
        options: the representation's constructor arguments (its ``config()``).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    cls = representation_class(name)
    if cls.loads_weights:
        options["load_weights"] = load_weights
    return cls(**options)
