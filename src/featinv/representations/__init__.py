"""The representations Phi that featinv inverts."""

from featinv.representations.alexnet import AlexNet
from featinv.representations.base import (
    Representation,
    available_representations,
    build_representation,
    rgb_to_grey,
)
from featinv.representations.hog import HOG, hog_features
from featinv.representations.lbp import LBP, lbp_features

__all__ = [
    "HOG",
    "LBP",
    "AlexNet",
    "Representation",
    "available_representations",
    "build_representation",
    "hog_features",
    "lbp_features",
    "rgb_to_grey",
]
