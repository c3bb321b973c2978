"""AlexNet as Dosovitskiy & Brox invert it: the output of one layer, from local weights.

A ``CNN`` (``featinv.representations.cnn``) with the paper's layer semantics. Two variants
(Sect. 2.1, they invert CaffeNet):

* ``caffenet``: the paper's network -- 96/256/384/384/256 channels, groups of 2 in conv2, conv4
  and conv5, local response normalization after conv1 and conv2, 227x227 BGR input with the
  ImageNet mean subtracted on the 0-255 scale. State-dict keys ``conv1.weight`` ...
  ``conv5.bias``, ``fc6.weight`` ... ``fc8.bias`` with Caffe's shapes (conv2:
  ``(256, 48, 5, 5)``, conv1's input channels in BGR order): a Caffe ``.caffemodel``
  converted blob by blob has exactly this layout.
* ``torchvision``: torchvision's single-tower AlexNet (64/192/384/256/256, 224x224, RGB with
  ImageNet mean/std), state-dict keys identical to torchvision's, so
  ``alexnet-owt-7be5be79.pth`` loads as it is.

"Output of the layer" follows the paper: "the output of the last processing step of this
layer" -- conv1 after ReLU, pooling and normalization, fc6/fc7 after ReLU, fc8 before softmax.
Weights are never downloaded: a missing file is an error that says where it looked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featinv.representations.base import register
from featinv.representations.cnn import CNN

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
VARIANTS = ("caffenet", "torchvision")
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"

#: D&B's layer -> the network's own layer name holding "the last processing step" of it.
_CAFFENET_STEPS = {
    "conv1": "norm1",
    "conv2": "norm2",
    "conv3": "relu3",
    "conv4": "relu4",
    "conv5": "pool5",
    "fc6": "relu6",
    "fc7": "relu7",
    "fc8": "fc8",
}
LAST_STEP = {
    "caffenet": _CAFFENET_STEPS,
    # torchvision's AlexNet has no normalization: conv1 and conv2 end with their pooling
    "torchvision": {**_CAFFENET_STEPS, "conv1": "pool1", "conv2": "pool2"},
}
#: variant -> built-in architecture of featinv.representations.architectures
ARCHITECTURE = {"caffenet": "caffenet", "torchvision": "alexnet"}


@register
class AlexNet(CNN):
    """The output of one AlexNet layer (Dosovitskiy & Brox, Sect. 2.1).

    Args:
        layer: ``conv1`` ... ``conv5``, ``fc6``, ``fc7``, ``fc8``.
        variant: ``caffenet`` (the paper's) or ``torchvision``.
        weights: path of a state dict; ``None`` looks for torchvision's file in torch's hub
            cache; ``"random"`` initializes randomly (tests only: the features then mean
            nothing, which is logged).
        load_weights: ``False`` leaves the weights uninitialized and reads no file, for a
            caller that loads them next (``Inverter.from_checkpoint``: a checkpoint carries
            Phi's weights, so the file it was trained from need not exist here).
    """

    name = "alexnet"
    differentiable = True
    loads_weights = True
    #: CaffeNet's input side; torchvision's network pools adaptively and accepts it too.
    default_image_size = 227
    layers = LAYERS
    #: the normalization is fixed by the variant: kept out of checkpoints, as it always was
    persistent_normalization = False

    def decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Sect. 2.2 as the paper built it for AlexNet: conv maps get three convolutions and
        then up-convolutions, with no contraction; fc vectors Table 1's decoder."""
        return self.legacy_decoder_defaults(image_size)

    def __init__(
        self,
        layer: str = "fc8",
        variant: str = "caffenet",
        weights: str | None = None,
        load_weights: bool = True,
    ) -> None:
        if layer not in LAYERS:
            raise ValueError(f"unknown AlexNet layer {layer!r}; valid layers: {', '.join(LAYERS)}")
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown AlexNet variant {variant!r}; valid variants: {', '.join(VARIANTS)}"
            )
        self.variant = variant
        super().__init__(
            ARCHITECTURE[variant], LAST_STEP[variant][layer], weights, None, load_weights
        )
        self.layer = layer

    @property
    def label(self) -> str:
        return f"alexnet-{self.layer}"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return LAYERS

    @property
    def network_name(self) -> str:
        return "AlexNet"

    @property
    def class_scores(self) -> bool:
        return self.layer == "fc8"

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        # fc layers need conv5's 6x6 map in CaffeNet; torchvision pools adaptively.
        return 227 if self.variant == "caffenet" and self.layer.startswith("fc") else 67

    def _missing_weights_message(self, looked: list[Path]) -> str:
        if self.variant == "torchvision":
            return super()._missing_weights_message(looked)
        where = "\n".join(f"  - {p}" for p in looked) or "  (nowhere: no path was given)"
        return (
            f"no AlexNet (caffenet) weights found; looked in:\n{where}\nTo fix: convert the "
            "CaffeNet .caffemodel into a state dict with keys conv1.weight ... fc8.bias (Caffe "
            "shapes, conv1 in BGR order; see featinv.representations.alexnet), or MatConvNet's "
            "imagenet-caffe-ref.mat with featinv-convert-weights, and pass its path with "
            "--model.representation_options.weights PATH (or weights: random for tests only)."
        )

    def config(self) -> dict[str, Any]:
        return {"layer": self.layer, "variant": self.variant, "weights": self.weights}

    def extra_repr(self) -> str:
        return f"layer={self.layer}, variant={self.variant}"
