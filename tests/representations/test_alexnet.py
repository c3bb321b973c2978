"""AlexNet: layer shapes of both variants, weights from local files only, clear errors."""

from __future__ import annotations

import pytest
import torch

from featinv.decoders import build_decoder
from featinv.representations import AlexNet, build_representation
from featinv.representations.alexnet import LAYERS

CAFFENET_227 = {
    "conv1": (96, 27, 27),
    "conv2": (256, 13, 13),
    "conv3": (384, 13, 13),
    "conv4": (384, 13, 13),
    "conv5": (256, 6, 6),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (1000,),
}
TORCHVISION_224 = {
    "conv1": (64, 27, 27),
    "conv2": (192, 13, 13),
    "conv3": (384, 13, 13),
    "conv4": (256, 13, 13),
    "conv5": (256, 6, 6),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (1000,),
}
#: The keys of torchvision's alexnet-owt-7be5be79.pth.
TORCHVISION_KEYS = [
    f"{part}.{i}.{p}"
    for part, idx in (("features", (0, 3, 6, 8, 10)), ("classifier", (1, 4, 6)))
    for i in idx
    for p in ("weight", "bias")
]
SMALL = {
    "conv": {"width": 8, "max_width": 8, "min_width": 4},
    "fc": {"fc_width": 32, "start_channels": 8},
}


@pytest.mark.parametrize(
    ("variant", "size", "shapes"),
    [("caffenet", 227, CAFFENET_227), ("torchvision", 224, TORCHVISION_224)],
)
def test_every_layer_has_the_advertised_shape_and_decoder(variant, size, shapes):
    torch.manual_seed(0)
    images = torch.rand(2, 3, size, size)
    for layer, shape in shapes.items():
        phi = AlexNet(layer, variant, weights="random")
        assert tuple(phi(images).shape[1:]) == shape == phi.output_shape(size)
        decoder = build_decoder(phi, size, **SMALL[layer[:-1] if layer[-1].isdigit() else "fc"])
        out = decoder(phi(images))
        expected = (128, 128) if layer.startswith("fc") else decoder.output_size
        assert out.shape == (2, 3, *expected)
        if not layer.startswith("fc"):  # as many up-convolutions as the stride needs
            assert size / 2 < decoder.output_size[0] <= size


def test_fc_decoder_is_table_one():
    phi = AlexNet("fc8", weights="random")
    decoder = build_decoder(phi, 227)
    linear = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (1000, 4096),
        (4096, 4096),
        (4096, 4096),
    ]
    ups = [m.out_channels for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert ups == [256, 128, 64, 32, 3]


def test_torchvision_layout_round_trip(tmp_path):
    torch.manual_seed(0)
    source = AlexNet("fc8", "torchvision", weights="random")
    state = source.net.state_dict()
    assert sorted(state) == sorted(TORCHVISION_KEYS)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    loaded = AlexNet("fc8", "torchvision", weights=str(path))
    images = torch.rand(2, 3, 224, 224)
    assert torch.equal(loaded(images), source(images))
    # a full-network file also serves a shallower tap, whose network stops there
    shallow = AlexNet("fc7", "torchvision", weights=str(path))
    assert "classifier.6.weight" not in shallow.net.state_dict()
    flat = source.net[:-1](source.preprocess(images))  # features, avgpool, flatten
    assert torch.equal(shallow(images), source.net.classifier[:-1](flat))  # up to relu7
    conv2 = AlexNet("conv2", "torchvision", weights=str(path))
    assert torch.equal(conv2.net.features[3].weight, source.net.features[3].weight)


def test_hub_cache_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(FileNotFoundError) as error:
            AlexNet("conv1", "torchvision")
        assert str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in str(
            error.value
        )
        assert "--model.representation_options.weights" in str(error.value)
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(
            AlexNet("fc8", "torchvision", weights="random").net.state_dict(),
            tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth",
        )
        assert AlexNet("conv1", "torchvision").weights is None
    finally:
        torch.hub.set_dir(str(tmp_path / "unused"))


def test_caffenet_layout_loads_and_wrong_layouts_are_named(tmp_path):
    torch.manual_seed(0)
    source = AlexNet("fc8", "caffenet", weights="random")
    path = tmp_path / "caffenet.pth"
    torch.save(source.net.state_dict(), path)
    assert sorted(source.net.state_dict())[:2] == ["conv1.bias", "conv1.weight"]
    images = torch.rand(1, 3, 227, 227)
    assert torch.equal(AlexNet("fc8", "caffenet", weights=str(path))(images), source(images))
    with pytest.raises(ValueError, match=r"key 'features.0.weight' is missing.*conv1.weight"):
        AlexNet("conv1", "torchvision", weights=str(path))
    state = source.net.state_dict()
    state["conv2.weight"] = torch.zeros(256, 96, 5, 5)  # no groups
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"'conv2.weight' has shape \(256, 96, 5, 5\).*\(256, 48, 5, 5\)"
    ):
        AlexNet("conv3", "caffenet", weights=str(path))


def test_bad_names_and_missing_files_are_explained(tmp_path):
    with pytest.raises(
        ValueError, match="valid layers: conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8"
    ):
        build_representation("alexnet", layer="pool5", weights="random")
    with pytest.raises(ValueError, match="valid variants: caffenet, torchvision"):
        build_representation("alexnet", variant="vgg", weights="random")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pth")):
        AlexNet("conv1", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="convert the CaffeNet"):
        AlexNet("conv1", "caffenet")
    with pytest.raises(ValueError, match="at least 227x227"):
        AlexNet("fc6", weights="random")(torch.rand(1, 3, 200, 200))


def test_random_weights_are_logged_as_meaningless(caplog):
    AlexNet("conv1", weights="random")
    assert "scientifically meaningless" in caplog.text


def test_layers_are_the_papers_outputs():
    """conv1 is after ReLU + pool + LRN; fc6/fc7 after ReLU (non-negative); fc8 before softmax."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 227, 227)
    for layer in LAYERS:
        out = AlexNet(layer, weights="random")(images)
        if layer != "fc8":
            assert (out >= 0).all(), layer
    assert (AlexNet("fc8", weights="random")(images) < 0).any()
