"""The built-in CNNs featinv inverts, as data: modules, layer names, input normalization.

Each architecture is a (nested) ``nn.Sequential`` whose module names are the state-dict
layout its weight files use, plus the papers' layer names mapped to module paths, in forward
order (Mahendran & Vedaldi, IJCV 2016, Tables 1-3):

* ``alexnet``: torchvision's AlexNet (``alexnet-owt-7be5be79.pth`` loads as it is);
* ``caffenet``: CaffeNet, Dosovitskiy & Brox's network (pool before norm, groups of 2; keys
  ``conv1.weight`` ... ``fc8.bias``; MatConvNet's ``imagenet-caffe-ref.mat`` converts to it);
* ``caffealex``: BVLC AlexNet as in M&V's Table 1 (norm before pool; ``imagenet-caffe-alex.mat``);
* ``vggm``: VGG-M (M&V's Table 2; ``imagenet-vgg-m.mat``);
* ``vgg16``: VGG-VD-16 in torchvision's layout (``vgg16-397923af.pth``; M&V's Table 3;
  ``imagenet-vgg-verydeep-16.mat`` and Keras's VGG16 ``.h5`` files convert to it);
* ``vgg19``: VGG-VD-19 likewise (``vgg19-dcbb9e9d.pth``, Keras's VGG19 ``.h5``).

The input normalization travels with the architecture, as timm's pretrained configs do: the
representation takes RGB in [0, 1] and applies ``Normalization``
(``featinv.representations.input_normalization``) itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from featinv.representations.input_normalization import (
    CAFFE,
    MATCONVNET,
    TORCHVISION,
    Normalization,
)


class PaddedMaxPool(nn.Module):
    """Max pooling after an explicit, possibly asymmetric padding (MatConvNet's ``pad``:
    ``[top, bottom, left, right]``), padding with -inf so it never wins."""

    def __init__(self, kernel: int, stride: int, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride, self.pad = kernel, stride, tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pad
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, pad={self.pad}"


@dataclass(frozen=True)
class Architecture:
    """A built-in network: how to build it, its layer names, its input.

    Attributes:
        build: makes the untrained network (module names = the weight files' layout).
        layers: the papers' layer names -> module paths, in forward order.
        normalization: what the network expects of its input.
        input_size: the side it was trained at.
        hub_file: torchvision's weights file name, looked for in torch's hub cache.
        baseline_c: M&V Sect. 5.2's loss weight C: (last layer of a range, C), in order; the
            layers after the last range get 1.
    """

    build: Callable[[], nn.Sequential]
    layers: dict[str, str]
    normalization: Normalization
    input_size: int
    hub_file: str | None = None
    baseline_c: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def c_of(self, layer: str) -> float:
        """M&V's C for a paper layer name (Sect. 5.2)."""
        order = list(self.layers)
        for last, c in self.baseline_c:
            if order.index(layer) <= order.index(last):
                return c
        return 1.0


def _relu() -> nn.ReLU:
    return nn.ReLU(inplace=False)  # a tapped output must not be changed by the next step


def _lrn_caffe() -> nn.LocalResponseNorm:
    # Caffe's LRN: local_size 5, alpha 1e-4 (divided by the size, as PyTorch does), beta 0.75
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


def _lrn_matconvnet() -> nn.LocalResponseNorm:
    # MatConvNet's vl_nnnormalize [5 2 1e-4 0.75] does not divide alpha by the size
    return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)


def _classifier(in_features: int, names: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """fc6, relu6, drop6, fc7, relu7, drop7, fc8 (flat, named like Caffe/MatConvNet)."""
    fc6, relu6, drop6, fc7, relu7, drop7, fc8 = names
    return [
        (fc6, nn.Linear(in_features, 4096)),
        (relu6, _relu()),
        (drop6, nn.Dropout(0.5)),
        (fc7, nn.Linear(4096, 4096)),
        (relu7, _relu()),
        (drop7, nn.Dropout(0.5)),
        (fc8, nn.Linear(4096, 1000)),
    ]


FLAT_FC = ("fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8")


def _caffenet(norm_first: bool) -> nn.Sequential:
    """CaffeNet (pool, then norm) or BVLC AlexNet (norm, then pool); Caffe pools round up."""

    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    def stage(i: int) -> list[tuple[str, nn.Module]]:
        steps = [(f"pool{i}", pool()), (f"norm{i}", _lrn_caffe())]
        return steps[::-1] if norm_first else steps

    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(3, 96, 11, stride=4)),
                ("relu1", _relu()),
                *stage(1),
                ("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2)),
                ("relu2", _relu()),
                *stage(2),
                ("conv3", nn.Conv2d(256, 384, 3, padding=1)),
                ("relu3", _relu()),
                ("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2)),
                ("relu4", _relu()),
                ("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2)),
                ("relu5", _relu()),
                ("pool5", pool()),
                ("flatten", nn.Flatten(1)),
                *_classifier(256 * 6 * 6, FLAT_FC),
            ]
        )
    )


def _flat_names(norm_first: bool) -> dict[str, str]:
    stage1 = ["norm1", "pool1"] if norm_first else ["pool1", "norm1"]
    stage2 = ["norm2", "pool2"] if norm_first else ["pool2", "norm2"]
    names = ["conv1", "relu1", *stage1, "conv2", "relu2", *stage2]
    names += ["conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5"]
    names += ["fc6", "relu6", "fc7", "relu7", "fc8"]
    return {name: name for name in names}


def _vggm() -> nn.Sequential:
    """VGG-M (Chatfield et al. 2014) as in MatConvNet's imagenet-vgg-m.mat."""
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(3, 96, 7, stride=2)),
                ("relu1", _relu()),
                ("norm1", _lrn_matconvnet()),
                ("pool1", PaddedMaxPool(3, 2, (0, 1, 0, 1))),
                ("conv2", nn.Conv2d(96, 256, 5, stride=2, padding=1)),
                ("relu2", _relu()),
                ("norm2", _lrn_matconvnet()),
                ("pool2", PaddedMaxPool(3, 2, (0, 1, 0, 1))),
                ("conv3", nn.Conv2d(256, 512, 3, padding=1)),
                ("relu3", _relu()),
                ("conv4", nn.Conv2d(512, 512, 3, padding=1)),
                ("relu4", _relu()),
                ("conv5", nn.Conv2d(512, 512, 3, padding=1)),
                ("relu5", _relu()),
                ("pool5", PaddedMaxPool(3, 2, (0, 1, 0, 1))),
                ("flatten", nn.Flatten(1)),
                *_classifier(512 * 6 * 6, FLAT_FC),
            ]
        )
    )


#: VGG-16's and VGG-19's blocks: convolutions per block and their channels.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
VGG19_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


def _vgg(blocks: tuple[tuple[int, int], ...]) -> nn.Sequential:
    """VGG-VD-16 / -19 with torchvision's module names (features.N, avgpool, classifier.N)."""
    features: list[nn.Module] = []
    channels = 3
    for convs, width in blocks:
        for _ in range(convs):
            features += [nn.Conv2d(channels, width, 3, padding=1), _relu()]
            channels = width
        features.append(nn.MaxPool2d(2, 2))
    classifier = [module for _, module in _classifier(512 * 7 * 7, FLAT_FC)]
    # torchvision's order: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    return nn.Sequential(
        OrderedDict(
            [
                ("features", nn.Sequential(*features)),
                ("avgpool", nn.AdaptiveAvgPool2d((7, 7))),
                ("flatten", nn.Flatten(1)),
                ("classifier", nn.Sequential(*classifier)),
            ]
        )
    )


def _vgg_names(blocks: tuple[tuple[int, int], ...]) -> dict[str, str]:
    names: dict[str, str] = {}
    index = 0
    for block, (convs, _) in enumerate(blocks, start=1):
        for conv in range(1, convs + 1):
            names[f"conv{block}_{conv}"] = f"features.{index}"
            names[f"relu{block}_{conv}"] = f"features.{index + 1}"
            index += 2
        names[f"pool{block}"] = f"features.{index}"
        index += 1
    names.update(
        {
            "fc6": "classifier.0",
            "relu6": "classifier.1",
            "fc7": "classifier.3",
            "relu7": "classifier.4",
            "fc8": "classifier.6",
        }
    )
    return names


def _torchvision_alexnet() -> nn.Sequential:
    """torchvision's single-tower AlexNet (64/192/384/256/256), its module names."""
    return nn.Sequential(
        OrderedDict(
            [
                (
                    "features",
                    nn.Sequential(
                        nn.Conv2d(3, 64, 11, stride=4, padding=2),
                        _relu(),
                        nn.MaxPool2d(3, 2),
                        nn.Conv2d(64, 192, 5, padding=2),
                        _relu(),
                        nn.MaxPool2d(3, 2),
                        nn.Conv2d(192, 384, 3, padding=1),
                        _relu(),
                        nn.Conv2d(384, 256, 3, padding=1),
                        _relu(),
                        nn.Conv2d(256, 256, 3, padding=1),
                        _relu(),
                        nn.MaxPool2d(3, 2),
                    ),
                ),
                ("avgpool", nn.AdaptiveAvgPool2d((6, 6))),
                ("flatten", nn.Flatten(1)),
                (
                    "classifier",
                    nn.Sequential(
                        nn.Dropout(0.5),
                        nn.Linear(256 * 6 * 6, 4096),
                        _relu(),
                        nn.Dropout(0.5),
                        nn.Linear(4096, 4096),
                        _relu(),
                        nn.Linear(4096, 1000),
                    ),
                ),
            ]
        )
    )


TORCHVISION_ALEXNET_NAMES = {
    "conv1": "features.0",
    "relu1": "features.1",
    "pool1": "features.2",
    "conv2": "features.3",
    "relu2": "features.4",
    "pool2": "features.5",
    "conv3": "features.6",
    "relu3": "features.7",
    "conv4": "features.8",
    "relu4": "features.9",
    "conv5": "features.10",
    "relu5": "features.11",
    "pool5": "features.12",
    "fc6": "classifier.1",
    "relu6": "classifier.2",
    "fc7": "classifier.4",
    "relu7": "classifier.5",
    "fc8": "classifier.6",
}

#: M&V Sect. 5.2: "C = 300 up to relu3, C = 100 up to relu4, C = 20 up to relu5, and C = 1
#: for the remaining layers" (AlexNet, VGG-M); "C = 300 up to conv4_3, C = 100 for conv5_1,
#: C = 20 up to conv5_3, and C = 1 onwards" (VGG-VD).
ALEXNET_C = (("relu3", 300.0), ("relu4", 100.0), ("relu5", 20.0))
VGG16_C = (("conv4_3", 300.0), ("conv5_1", 100.0), ("conv5_3", 20.0))
VGG19_C = (("conv4_4", 300.0), ("conv5_1", 100.0), ("conv5_4", 20.0))

ARCHITECTURES: dict[str, Architecture] = {
    "alexnet": Architecture(
        _torchvision_alexnet,
        TORCHVISION_ALEXNET_NAMES,
        TORCHVISION,
        224,
        hub_file="alexnet-owt-7be5be79.pth",
        baseline_c=ALEXNET_C,
    ),
    "caffenet": Architecture(
        lambda: _caffenet(norm_first=False), _flat_names(False), CAFFE, 227, baseline_c=ALEXNET_C
    ),
    "caffealex": Architecture(
        lambda: _caffenet(norm_first=True), _flat_names(True), CAFFE, 227, baseline_c=ALEXNET_C
    ),
    "vggm": Architecture(_vggm, _flat_names(True), MATCONVNET, 224, baseline_c=ALEXNET_C),
    "vgg16": Architecture(
        lambda: _vgg(VGG16_BLOCKS),
        _vgg_names(VGG16_BLOCKS),
        TORCHVISION,
        224,
        hub_file="vgg16-397923af.pth",
        baseline_c=VGG16_C,
    ),
    "vgg19": Architecture(
        lambda: _vgg(VGG19_BLOCKS),
        _vgg_names(VGG19_BLOCKS),
        TORCHVISION,
        224,
        hub_file="vgg19-dcbb9e9d.pth",
        baseline_c=VGG19_C,
    ),
}
