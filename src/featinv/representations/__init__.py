"""The representations Phi that featinv inverts; importing this package registers them all."""

from featinv.representations.alexnet import AlexNet
from featinv.representations.base import (
    Representation,
    available_representations,
    build_representation,
    register,
    representation_class,
    training_image_size,
)
from featinv.representations.cnn import CNN
from featinv.representations.dsift import DSIFT, dsift_features
from featinv.representations.hog import HOG, hog_features
from featinv.representations.lbp import LBP, lbp_features
from featinv.representations.sift import SparseSIFT

__all__ = [
    "CNN",
    "DSIFT",
    "HOG",
    "LBP",
    "AlexNet",
    "Representation",
    "SparseSIFT",
    "available_representations",
    "build_representation",
    "dsift_features",
    "hog_features",
    "lbp_features",
    "register",
    "representation_class",
    "training_image_size",
]
