"""A network's input normalization: RGB in [0, 1] to what its weights were trained on.

It travels with the architecture, as timm's pretrained configs do, or with a converted
weights file (``featinv-convert-weights`` records it), and goes into checkpoints with the
channel order, so a decoder's network is rebuilt exactly as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Per-channel mean of Caffe's ilsvrc_2012_mean.npy, B, G, R, on the 0-255 scale.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
#: MatConvNet's models subtract this average RGB image mean (0-255 scale).
MATCONVNET_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclass(frozen=True)
class Normalization:
    """What a network expects of its input: ``(flip_to_bgr(x) * scale - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    bgr: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "bgr": self.bgr,
        }


def normalization_from(values: dict[str, Any]) -> Normalization:
    """A ``Normalization`` from plain values (a config, a converted weights file)."""
    unknown = set(values) - {"mean", "std", "scale", "bgr"}
    if unknown:
        raise ValueError(f"normalization keys are mean, std, scale, bgr; got {sorted(unknown)}")
    return Normalization(
        mean=tuple(float(v) for v in values["mean"]),
        std=tuple(float(v) for v in values.get("std", (1.0, 1.0, 1.0))),
        scale=float(values.get("scale", 1.0)),
        bgr=bool(values.get("bgr", False)),
    )


class InputNormalization(nn.Module):
    """``(flip_to_bgr(x) * scale - mean) / std``: RGB in [0, 1] to what a network expects.

    Its buffers go into checkpoints (``persistent``), the channel order among them, so a
    network whose normalization came from a converted weights file is rebuilt with it."""

    def __init__(self, normalization: Normalization, persistent: bool = True) -> None:
        super().__init__()
        self.flip_to_bgr = normalization.bgr  # read by forward without a device sync
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, 3, 1, 1), persistent)
        self.register_buffer("std", torch.tensor(normalization.std).view(1, 3, 1, 1), persistent)
        self.register_buffer("scale", torch.tensor(float(normalization.scale)), persistent)
        self.register_buffer("bgr", torch.tensor(normalization.bgr), persistent)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        if prefix + "bgr" not in state_dict and prefix + "mean" in state_dict:
            # Written before the channel order was saved: an ImageNet mean listed blue first
            # (Caffe's 104, 117, 123) is in BGR order; RGB lists red (123.7 or 0.485) first.
            mean = state_dict[prefix + "mean"].flatten()
            state_dict[prefix + "bgr"] = torch.tensor(bool(mean[0] < mean[2]))
        super()._load_from_state_dict(state_dict, prefix, *args)
        self.flip_to_bgr = bool(self.bgr)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.flip_to_bgr:
            images = images.flip(1)
        return (images * self.scale - self.mean) / self.std


TORCHVISION = Normalization(IMAGENET_MEAN, IMAGENET_STD)
CAFFE = Normalization(CAFFE_MEAN_BGR, scale=255.0, bgr=True)
MATCONVNET = Normalization(MATCONVNET_MEAN_RGB, scale=255.0)
