"""featinv-convert-weights on .mat files written here in MatConvNet's simplenn structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.io import savemat

from featinv.cli.convert_weights import main
from featinv.representations import CNN
from featinv.representations.matconvnet import ConversionError, convert, linear_weight

#: VGG-M's first layers as imagenet-vgg-m.mat holds them (M&V Table 2): name, type, filters
#: (H, W, C_in, C_out), stride, pad [top bottom left right].
VGGM_HEAD = [
    ("conv1", "conv", (7, 7, 3, 96), 2, [0, 0, 0, 0]),
    ("relu1", "relu", None, 1, 0),
    ("norm1", "lrn", None, 1, 0),
    ("pool1", "pool", None, 2, [0, 1, 0, 1]),
    ("conv2", "conv", (5, 5, 96, 256), 2, [1, 1, 1, 1]),
    ("relu2", "relu", None, 1, 0),
    ("norm2", "lrn", None, 1, 0),
    ("pool2", "pool", None, 2, [0, 1, 0, 1]),
    ("conv3", "conv", (3, 3, 256, 512), 1, [1, 1, 1, 1]),
    ("relu3", "relu", None, 1, 0),
]
LRN = np.array([5, 2, 1e-4, 0.75])
AVERAGE_RGB = np.array([122.7, 114.8, 101.6])


def _layer(name, kind, shape, stride, pad, rng):
    layer = {"name": name, "type": kind, "stride": np.array([stride, stride], float), "pad": pad}
    if kind == "conv":
        filters = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        biases = (rng.standard_normal(shape[-1]) * 0.05).astype(np.float32)
        cell = np.empty((1, 2), dtype=object)
        cell[0, 0], cell[0, 1] = filters, biases
        layer.update(weights=cell, pad=np.array(pad, float))
    elif kind == "lrn":
        layer["param"] = LRN
    elif kind == "pool":
        layer.update(method="max", pool=np.array([3, 3], float), pad=np.array(pad, float))
    return layer


def _write_simplenn(path, layers, rng):
    """A .mat as MatConvNet saves a simplenn model: `layers` a 1xN cell of structs, `meta`
    with normalization.averageImage (H x W x 3, single) and imageSize."""
    cell = np.empty((1, len(layers)), dtype=object)
    made = []
    for i, spec in enumerate(layers):
        made.append(_layer(*spec, rng))
        cell[0, i] = made[-1]
    average = np.broadcast_to(AVERAGE_RGB, (224, 224, 3)).astype(np.float32)
    meta = {"normalization": {"averageImage": average, "imageSize": np.array([224, 224, 3.0])}}
    savemat(path, {"layers": cell, "meta": meta})
    return made


def _matconvnet_forward(layers, images):
    """What vl_simplenn computes, written from MatConvNet's documentation with plain ops."""
    x = images * 255 - torch.tensor(AVERAGE_RGB, dtype=torch.float32).view(1, 3, 1, 1)
    for layer in layers:
        kind = layer["type"]
        if kind == "conv":
            filters, biases = layer["weights"][0, 0], layer["weights"][0, 1]
            top, bottom, left, right = (int(v) for v in layer["pad"])
            x = F.pad(x, (left, right, top, bottom))
            weight = torch.from_numpy(filters).permute(3, 2, 0, 1)
            x = F.conv2d(x, weight, torch.from_numpy(biases), stride=int(layer["stride"][0]))
        elif kind == "relu":
            x = x.clamp_min(0)
        elif kind == "lrn":  # y = x / (kappa + alpha * sum over 5 channels of x^2)^beta
            n, kappa, alpha, beta = layer["param"]
            squares = F.pad(x.pow(2), (0, 0, 0, 0, int(n) // 2, int(n) // 2))
            window = sum(squares[:, i : i + x.shape[1]] for i in range(int(n)))
            x = x / (kappa + alpha * window).pow(beta)
        elif kind == "pool":
            top, bottom, left, right = (int(v) for v in layer["pad"])
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
            x = F.max_pool2d(x, 3, int(layer["stride"][0]))
    return x


def test_vggm_file_converts_bit_for_bit_and_computes_what_matconvnet_does(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "imagenet-vgg-m-head.mat"
    layers = _write_simplenn(source, VGGM_HEAD, rng)
    target = main([str(source), str(tmp_path / "vggm.pth")])  # the architecture is detected
    converted = torch.load(target, weights_only=True)
    assert converted["architecture"] == "vggm"
    assert converted["normalization"]["mean"] == pytest.approx(AVERAGE_RGB.tolist(), abs=1e-4)
    for layer in layers:
        if layer["type"] == "conv":
            filters, biases = layer["weights"][0, 0], layer["weights"][0, 1]
            weight = converted["state_dict"][f"{layer['name']}.weight"]
            assert torch.equal(weight, torch.from_numpy(filters.transpose(3, 2, 0, 1).copy()))
            assert torch.equal(
                converted["state_dict"][f"{layer['name']}.bias"], torch.from_numpy(biases)
            )
    phi = CNN("vggm", "relu3", weights=str(target))
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    expected = _matconvnet_forward(layers, images)
    with torch.no_grad():
        out = phi(images)
    assert out.shape == expected.shape == (2, 512, 13, 13)
    assert torch.allclose(out, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())
    # a layer the file does not hold is named, not guessed
    with pytest.raises(ValueError, match=r"key 'conv4\.weight' is missing"):
        CNN("vggm", "conv4", weights=str(target))


def test_fully_connected_layers_keep_pytorchs_flattening():
    """fc6 is stored as a 6x6 convolution; as nn.Linear it must read (C, H, W) flattened maps."""
    rng = np.random.default_rng(1)
    filters = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)  # H, W, C_in, C_out
    maps = torch.from_numpy(rng.standard_normal((2, 4, 3, 2)).astype(np.float32))
    as_conv = F.conv2d(maps, torch.from_numpy(filters.transpose(3, 2, 0, 1).copy()))
    assert torch.allclose(maps.flatten(1) @ linear_weight(filters).T, as_conv.flatten(1), atol=1e-5)


def test_a_file_of_another_network_is_refused_by_layer(tmp_path, capsys):
    rng = np.random.default_rng(0)
    wrong = [("conv1", "conv", (11, 11, 3, 96), 4, [0, 0, 0, 0]), ("relu1", "relu", None, 1, 0)]
    _write_simplenn(tmp_path / "alex.mat", wrong, rng)
    with pytest.raises(ConversionError, match=r"'conv1': the file has stride=4.* network stride=2"):
        convert(tmp_path / "alex.mat", "vggm")
    narrow = [("conv1", "conv", (7, 7, 3, 64), 2, [0, 0, 0, 0])]
    _write_simplenn(tmp_path / "narrow.mat", narrow, rng)
    with pytest.raises(ConversionError, match=r"'conv1': weight has shape \(64, 3, 7, 7\)"):
        convert(tmp_path / "narrow.mat", "vggm")
    # its first layer is CaffeNet's: detection finds that, and its own network says so
    main([str(tmp_path / "alex.mat"), str(tmp_path / "alex.pth")])
    assert torch.load(tmp_path / "alex.pth", weights_only=True)["architecture"] == "caffenet"
    with pytest.raises(SystemExit, match="fits no built-in architecture"):
        main([str(tmp_path / "narrow.mat"), str(tmp_path / "out.pth")])
    (tmp_path / "junk.mat").write_bytes(b"not matlab")
    with pytest.raises(SystemExit, match=r"not a readable \.mat file"):
        main([str(tmp_path / "junk.mat"), str(tmp_path / "out.pth")])
