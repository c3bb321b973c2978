"""The registry: names from the classes, no duplicates, attributes readable without building."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from featinv.data.datamodule import InversionDataModule
from featinv.representations import (
    HOG,
    AlexNet,
    Representation,
    SparseSIFT,
    available_representations,
    build_representation,
    register,
    representation_class,
)
from featinv.representations.base import _REGISTRY


def test_registration_takes_the_name_from_the_class_and_refuses_duplicates():
    class Identity(Representation):
        name: ClassVar[str] = "identity-for-test"

        def config(self) -> dict[str, Any]:
            return {}

    class Impostor(Representation):
        name: ClassVar[str] = "hog"

    class Nameless(Representation):
        pass

    try:
        assert register(Identity) is Identity
        assert register(Identity) is Identity  # registering the same class again is harmless
        assert "identity-for-test" in available_representations()
        assert isinstance(build_representation("identity-for-test"), Identity)
        with pytest.raises(ValueError, match=r"'hog' is taken by featinv\.representations\.hog"):
            register(Impostor)
        with pytest.raises(ValueError, match="has no name"):
            register(Nameless)
    finally:
        _REGISTRY.pop("identity-for-test", None)
    assert representation_class("hog") is HOG


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown representation 'hgo'; valid names: alexnet, cnn, dsift, hog"
    ):
        representation_class("hgo")


def test_classes_say_what_callers_used_to_ask_by_name():
    assert SparseSIFT.runs_in_loader and not HOG.runs_in_loader
    assert AlexNet.loads_weights and not HOG.loads_weights
    assert AlexNet.default_image_size == 227 and HOG.default_image_size == 64
    assert AlexNet.layers[0] == "conv1" and HOG.layers == ()
    alexnet = AlexNet("conv3", load_weights=False)
    assert alexnet.label == "alexnet-conv3" and HOG().label == "hog"
    assert alexnet.baseline_defaults() == {"c": 300.0, "jitter": 4}
    assert AlexNet("fc8", load_weights=False).class_scores and not alexnet.class_scores


def test_alexnet_without_weights_reads_no_file_but_with_them_says_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere.pth"
    AlexNet("conv1", weights=str(missing), load_weights=False)  # no error: nothing read
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        build_representation("alexnet", layer="conv1", weights=str(missing))


def test_data_module_reads_the_class_without_building_the_network(tmp_path):
    """A representation computed in the step (AlexNet) is not built by the data module, so
    its weights file is read once, by the model."""
    data = InversionDataModule(
        representation="alexnet",
        representation_options={"layer": "conv1", "weights": str(tmp_path / "absent.pth")},
        image_size=227,
    )
    assert data.loader_representation is None
    sift = InversionDataModule(representation="sift")
    assert isinstance(sift.loader_representation, SparseSIFT)
