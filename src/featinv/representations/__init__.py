"""The representations Phi that featinv inverts."""

from featinv.representations.base import (
    Representation,
    available_representations,
    build_representation,
    rgb_to_grey,
)
from featinv.representations.hog import HOG, hog_features

__all__ = [
    "HOG",
    "Representation",
    "available_representations",
    "build_representation",
    "hog_features",
    "rgb_to_grey",
]
