"""AlexNet as a representation: the output of one layer, from locally stored weights.

Two variants (Dosovitskiy & Brox, Sect. 2.1, invert CaffeNet):

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

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from featinv.representations.base import Representation, as_pair, check_images, register

log = logging.getLogger(__name__)

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
VARIANTS = ("caffenet", "torchvision")
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"

#: Mahendran & Vedaldi, Sect. 5.2: "C = 300 up to relu3, C = 100 up to relu4, C = 20 up to
#: relu5, and C = 1" after. featinv's conv5 is the output of pool5 (after relu5).
BASELINE_C = {"conv1": 300, "conv2": 300, "conv3": 300, "conv4": 100, "conv5": 1}
#: Sect. 5.2: jitter T = a quarter of the layer's stride; strides of featinv's taps (conv1 =
#: norm1 and conv2 = norm2 come after pooling; conv5 = pool5; the fc layers see the whole image).
LAYER_STRIDE = {"conv1": 8, "conv2": 16, "conv3": 16, "conv4": 16, "conv5": 32}

#: Per-channel mean of Caffe's ilsvrc_2012_mean.npy, B, G, R, on the 0-255 scale.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _caffenet_modules() -> dict[str, nn.Module]:
    return {
        "conv1": nn.Conv2d(3, 96, 11, stride=4),
        "conv2": nn.Conv2d(96, 256, 5, padding=2, groups=2),
        "conv3": nn.Conv2d(256, 384, 3, padding=1),
        "conv4": nn.Conv2d(384, 384, 3, padding=1, groups=2),
        "conv5": nn.Conv2d(384, 256, 3, padding=1, groups=2),
        "fc6": nn.Linear(256 * 6 * 6, 4096),
        "fc7": nn.Linear(4096, 4096),
        "fc8": nn.Linear(4096, 1000),
    }


class _CaffeNet(nn.Module):
    """CaffeNet up to a layer; Caffe pools with ceil rounding and normalizes like LRN here."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        modules = _caffenet_modules()
        for name in LAYERS[: LAYERS.index(layer) + 1]:
            self.add_module(name, modules[name])
        self.layer = layer
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = torch.relu
        x = self.norm(self.pool(relu(self.conv1(x))))
        steps = {
            "conv2": lambda t: self.norm(self.pool(relu(self.conv2(t)))),
            "conv3": lambda t: relu(self.conv3(t)),
            "conv4": lambda t: relu(self.conv4(t)),
            "conv5": lambda t: self.pool(relu(self.conv5(t))),
            "fc6": lambda t: relu(self.fc6(t.flatten(1))),
            "fc7": lambda t: relu(self.fc7(t)),
            "fc8": lambda t: self.fc8(t),
        }
        for name in LAYERS[1 : LAYERS.index(self.layer) + 1]:
            x = steps[name](x)
        return x


class _TorchvisionAlexNet(nn.Module):
    """torchvision's AlexNet with identical state-dict keys, evaluated up to a layer."""

    #: (module, index after which the layer's output is taken)
    TAPS: ClassVar[dict[str, tuple[str, int]]] = {
        "conv1": ("features", 2),
        "conv2": ("features", 5),
        "conv3": ("features", 7),
        "conv4": ("features", 9),
        "conv5": ("features", 12),
        "fc6": ("classifier", 2),
        "fc7": ("classifier", 5),
        "fc8": ("classifier", 6),
    }

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 1000),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part, last = self.TAPS[self.layer]
        stop = last if part == "features" else len(self.features) - 1
        for module in self.features[: stop + 1]:
            x = module(x)
        if part == "features":
            return x
        x = self.avgpool(x).flatten(1)
        for module in self.classifier[: last + 1]:
            x = module(x)
        return x


def hub_checkpoint_dirs() -> list[Path]:
    """Where torch's hub keeps downloaded weights ($TORCH_HOME/hub/checkpoints and the default)."""
    places = [Path(torch.hub.get_dir()) / "checkpoints"]
    default = Path(os.path.expanduser("~/.cache/torch/hub/checkpoints"))
    return places + ([default] if default not in places else [])


def _missing_weights_message(variant: str, looked: list[Path]) -> str:
    where = "\n".join(f"  - {p}" for p in looked) or "  (nowhere: no path was given)"
    how = (
        f"download torchvision's {TORCHVISION_FILE} on a machine with internet and copy it "
        "into one of those folders, or pass its path"
        if variant == "torchvision"
        else "convert the CaffeNet .caffemodel into a state dict with keys conv1.weight ... "
        "fc8.bias (Caffe shapes, conv1 in BGR order; see featinv.representations.alexnet) "
        "and pass its path"
    )
    return (
        f"no AlexNet ({variant}) weights found; looked in:\n{where}\nTo fix: {how} with "
        "--model.representation_options.weights PATH (or weights: random for tests only)."
    )


@register
class AlexNet(Representation):
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

    def __init__(
        self,
        layer: str = "fc8",
        variant: str = "caffenet",
        weights: str | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"unknown AlexNet layer {layer!r}; valid layers: {', '.join(LAYERS)}")
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown AlexNet variant {variant!r}; valid variants: {', '.join(VARIANTS)}"
            )
        self.layer, self.variant, self.weights = layer, variant, weights
        self.net = _CaffeNet(layer) if variant == "caffenet" else _TorchvisionAlexNet(layer)
        if variant == "caffenet":
            self.register_buffer(
                "mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False
            )
        else:
            self.register_buffer(
                "mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
            )
            self.register_buffer(
                "std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False
            )
        if load_weights:
            self._load_weights(weights)

    @property
    def label(self) -> str:
        return f"alexnet-{self.layer}"

    @property
    def class_scores(self) -> bool:
        return self.layer == "fc8"

    def baseline_defaults(self) -> dict[str, Any]:
        """Mahendran & Vedaldi, Sect. 5.2: C per layer, jitter a quarter of the stride."""
        stride = LAYER_STRIDE.get(self.layer, 32)
        return {"c": float(BASELINE_C.get(self.layer, 1)), "jitter": max(round(stride / 4), 1)}

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        # fc layers need conv5's 6x6 map in CaffeNet; torchvision pools adaptively.
        return 227 if self.variant == "caffenet" and self.layer.startswith("fc") else 67

    def _load_weights(self, weights: str | None) -> None:
        if weights == "random":
            log.warning(
                "AlexNet with RANDOM weights: its features are scientifically meaningless "
                "(fine for tests, not for experiments)"
            )
            return
        if weights is None:
            looked = (
                [d / TORCHVISION_FILE for d in hub_checkpoint_dirs()]
                if self.variant == "torchvision"
                else []
            )
            path = next((p for p in looked if p.is_file()), None)
            if path is None:
                raise FileNotFoundError(_missing_weights_message(self.variant, looked))
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(_missing_weights_message(self.variant, [path]))
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        self.load_layout(state, source=str(path))

    def load_layout(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load the weights this truncated network needs from a full-network state dict.

        Raises:
            ValueError: naming the first missing key or the first mismatching shape.
        """
        expected = self.net.state_dict()
        for key, tensor in expected.items():
            if key not in state:
                raise ValueError(
                    f"{source} is not an AlexNet ({self.variant}) state dict: key {key!r} is "
                    f"missing (it has {', '.join(list(state)[:4])}, ...)"
                )
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{source}: {key!r} has shape {tuple(state[key].shape)}, AlexNet "
                    f"({self.variant}) expects {tuple(tensor.shape)}"
                )
        self.net.load_state_dict({k: state[k] for k in expected})

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Project-convention RGB in [0, 1] -> the network's input convention."""
        if self.variant == "caffenet":
            return images.flip(1) * 255.0 - self.mean  # RGB -> BGR, 0-255, mean subtracted
        return (images - self.mean) / self.std

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, ...]:
        height, width = as_pair(image_size)
        with torch.no_grad():
            probe = torch.zeros(1, 3, height, width, device=self.mean.device)
            return tuple(self.net(self.preprocess(probe)).shape[1:])

    def config(self) -> dict[str, Any]:
        return {"layer": self.layer, "variant": self.variant, "weights": self.weights}

    def decoder_defaults(self, image_size: int | tuple[int, int]) -> dict[str, Any]:
        """Sect. 2.2: conv layers -> three convolutions, then up-convolutions (no contraction);
        fc layers -> Table 1's fully connected decoder (its own defaults)."""
        if self.layer.startswith("fc"):
            return {}
        side = min(self.output_shape(image_size)[1:])
        return {"num_convs": 3, "min_bottleneck": side, "width": 256, "max_width": 256}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.min_image_size, f"AlexNet {self.layer}")
        return self.net(self.preprocess(images))

    def extra_repr(self) -> str:
        return f"layer={self.layer}, variant={self.variant}"
