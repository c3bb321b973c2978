"""MatConvNet models as featinv weights files (``featinv-convert-weights IN.mat OUT.pth``).

Mahendran & Vedaldi inverted MatConvNet models (``imagenet-vgg-m.mat``,
``imagenet-vgg-verydeep-16.mat``, ``imagenet-caffe-alex.mat``, ``imagenet-caffe-ref.mat``).
Their ``simplenn`` structure -- a cell array of layers, each with ``name``, ``type`` and, for
convolutions, ``weights = {filters (H x W x C_in x C_out), biases}`` -- is read with SciPy and
written as a state dict for the matching built-in architecture
(``featinv.representations.architectures``), with the input normalization (the average
image's colour, 0-255, RGB) recorded beside it. Fully connected layers, convolutions in
MatConvNet, become ``nn.Linear`` weights in the (C, H, W) flattening PyTorch uses.

The layers are checked against the architecture as they are converted: every layer name must
be one of its layers, every filter must have its shape, and strides, paddings and the
normalization constants must be the ones the built-in network computes with. A file holding
only the first layers converts too (those layers can then be inverted).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featinv.reliability import available_memory
from featinv.representations.architectures import ARCHITECTURES, PaddedMaxPool

#: MatConvNet layer types without weights that have no counterpart to check.
IGNORED_TYPES = {"softmax", "softmaxloss", "dropout"}


class ConversionError(ValueError):
    """The file is not a MatConvNet simplenn model of the architecture; says why."""


#: MATLAB v5's data element type of a zlib-compressed variable.
MI_COMPRESSED = 15


def mat_unpacked_size(path: str | Path, limit: int) -> int:
    """The bytes a MATLAB v5/v7 file's variables take once read, counted by inflating its
    compressed ones a megabyte at a time (a compressed variable can be a bomb: zeros shrink a
    thousandfold); counting stops past ``limit``. v7.3 files (HDF5) count as their size."""
    with open(path, "rb") as stream:
        header = stream.read(128)
        endian = "<" if header[126:128] == b"IM" else ">"
        total = 0
        while total <= limit and len(tag := stream.read(8)) == 8:
            kind, length = struct.unpack(f"{endian}II", tag)
            if kind != MI_COMPRESSED:
                total += length
                stream.seek(length + (-length % 8), 1)
                continue
            inflate, left = zlib.decompressobj(), length
            while left > 0 and total <= limit:
                chunk = stream.read(min(left, 2**20))
                if not chunk:
                    break
                left -= len(chunk)
                total += len(inflate.decompress(chunk, 2**20))
                while inflate.unconsumed_tail and total <= limit:
                    total += len(inflate.decompress(inflate.unconsumed_tail, 2**20))
            stream.seek(left, 1)
    return total


def read_simplenn(path: str | Path) -> tuple[list[Any], Any]:
    """The layers and the normalization struct of a MatConvNet ``simplenn`` ``.mat`` file,
    refused before it is read when its variables would not fit in memory."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    free = available_memory()
    try:
        needed = mat_unpacked_size(path, free if free is not None else 2**62)
    except (OSError, zlib.error, struct.error) as error:
        raise ConversionError(f"{path} is not a readable .mat file ({error})") from None
    if free is not None and needed > free:
        raise ConversionError(
            f"{path} would take more than {free / 2**30:.1f} GiB to read, the memory available"
        )
    try:
        data = loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except NotImplementedError:
        raise ConversionError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which SciPy cannot read: in MATLAB, "
            "`net = load(IN); save(OUT, '-struct', 'net', '-v7')` and convert OUT"
        ) from None
    except (MatReadError, ValueError, OSError) as error:
        raise ConversionError(f"{path} is not a readable .mat file ({error})") from None
    net = data.get("net")
    source = net if net is not None else data
    layers = getattr(source, "layers", None) if net is not None else source.get("layers")
    if layers is None:
        kind = "a DagNN model (vars/params)" if net is not None else "no 'layers' variable"
        raise ConversionError(f"{path} is not a MatConvNet simplenn model: {kind}")
    meta = getattr(source, "meta", None) if net is not None else source.get("meta")
    normalization = getattr(meta, "normalization", None) if meta is not None else None
    if normalization is None:  # older MatConvNet models keep it at the top level
        normalization = (
            getattr(source, "normalization", None)
            if net is not None
            else (source.get("normalization"))
        )
    return list(np.atleast_1d(layers)), normalization


def _field(layer: Any, name: str, default: Any = None) -> Any:
    return getattr(layer, name, default)


def _four(pad: Any) -> tuple[int, int, int, int]:
    """MatConvNet's pad: a number or ``[top bottom left right]``."""
    values = [int(v) for v in np.atleast_1d(pad if pad is not None else 0)]
    top, bottom, left, right = values * 4 if len(values) == 1 else values
    return top, bottom, left, right


def _filters(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    weights = _field(layer, "weights")
    if weights is not None:
        filters, biases = np.atleast_1d(weights)[:2]
    else:  # MatConvNet before beta-8: separate fields
        filters, biases = _field(layer, "filters"), _field(layer, "biases")
    filters = np.asarray(filters, dtype=np.float32)
    while filters.ndim < 4:  # squeeze_me drops trailing singleton dimensions
        filters = filters[..., None]
    return filters, np.asarray(biases, dtype=np.float32).reshape(-1)


def conv_weight(filters: np.ndarray) -> torch.Tensor:
    """MatConvNet ``H x W x C_in x C_out`` filters -> PyTorch ``(C_out, C_in, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(filters.transpose(3, 2, 0, 1)))


def linear_weight(filters: np.ndarray) -> torch.Tensor:
    """A fully connected layer stored as an ``H x W x C_in x C_out`` convolution ->
    ``nn.Linear``'s ``(C_out, C_in * H * W)``, for inputs flattened in (C, H, W) order."""
    weight = conv_weight(filters)
    return weight.reshape(weight.shape[0], -1).contiguous()


def _check_geometry(name: str, layer: Any, module: nn.Module) -> None:
    """Strides, paddings and constants of the file's layer against the built-in module."""
    stride = int(np.atleast_1d(_field(layer, "stride", 1))[0])
    pad = _four(_field(layer, "pad", 0))
    found: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    if isinstance(module, nn.Conv2d):
        found, expected = (
            {"stride": stride, "pad": pad},
            {
                "stride": module.stride[0],
                "pad": (module.padding[0],) * 4,
            },
        )
    elif isinstance(module, PaddedMaxPool):
        size = int(np.atleast_1d(_field(layer, "pool"))[0])
        found = {"pool": size, "stride": stride, "pad": pad}
        expected = {"pool": module.kernel, "stride": module.stride, "pad": module.pad}
    elif isinstance(module, nn.MaxPool2d):
        size = int(np.atleast_1d(_field(layer, "pool"))[0])
        # Caffe's ceil-mode pooling appears in converted models as a bottom/right pad of 1
        found = {"pool": size, "stride": stride, "pad at most bottom/right 1": pad}
        expected = {"pool": module.kernel_size, "stride": module.stride}
        if pad[0] == pad[2] == 0 and max(pad) <= 1:
            found.pop("pad at most bottom/right 1")
    elif isinstance(module, nn.LocalResponseNorm):
        n, kappa, alpha, beta = (float(v) for v in np.atleast_1d(_field(layer, "param")))
        found = {"size": int(n), "kappa": kappa, "alpha x size": round(alpha * n, 10), "beta": beta}
        expected = {
            "size": module.size,
            "kappa": module.k,
            "alpha x size": round(module.alpha, 10),
            "beta": module.beta,
        }
    if found != expected:

        def shown(values: dict[str, Any]) -> str:
            return ", ".join(f"{k}={v}" for k, v in values.items())

        raise ConversionError(
            f"layer {name!r}: the file has {shown(found)}, the built-in network {shown(expected)}"
        )


def convert(path: str | Path, architecture: str) -> dict[str, Any]:
    """``{"state_dict", "normalization", "architecture", "source"}`` from a simplenn file.

    Raises:
        ConversionError: naming the first layer that does not fit ``architecture``.
    """
    spec = ARCHITECTURES[architecture]
    with torch.device("meta"):  # shapes only: nothing is allocated
        network = spec.build()
    modules = dict(network.named_modules())
    expected = network.state_dict()
    layers, normalization = read_simplenn(path)
    state: dict[str, torch.Tensor] = {}
    for layer in layers:
        name, kind = str(_field(layer, "name")), str(_field(layer, "type"))
        if kind in IGNORED_TYPES:
            continue
        if name not in spec.layers:
            raise ConversionError(
                f"layer {name!r} ({kind}) of {path} is not a layer of {architecture} "
                f"({', '.join(spec.layers)})"
            )
        module = modules[spec.layers[name]]
        try:
            _check_geometry(name, layer, module)
            if kind != "conv":
                continue
            filters, biases = _filters(layer)
            weight = (
                linear_weight(filters) if isinstance(module, nn.Linear) else conv_weight(filters)
            )
        except ConversionError:
            raise
        except (TypeError, ValueError, IndexError, AttributeError) as error:
            raise ConversionError(
                f"layer {name!r} ({kind}) of {path} is malformed: {type(error).__name__}: {error}"
            ) from None
        for key, tensor in (("weight", weight), ("bias", torch.from_numpy(biases))):
            full = f"{spec.layers[name]}.{key}"
            if tuple(tensor.shape) != tuple(expected[full].shape):
                raise ConversionError(
                    f"layer {name!r}: {key} has shape {tuple(tensor.shape)}, {architecture}'s "
                    f"{full} is {tuple(expected[full].shape)}"
                )
            state[full] = tensor
    if not state:
        raise ConversionError(f"{path} holds no convolution of {architecture}")
    return {
        "state_dict": state,
        "normalization": _normalization(normalization, path),
        "architecture": architecture,
        "source": str(path),
    }


def _normalization(normalization: Any, path: str | Path) -> dict[str, Any]:
    """The average image's colour (0-255, RGB) as featinv's input normalization."""
    average = getattr(normalization, "averageImage", None) if normalization is not None else None
    if average is None:
        raise ConversionError(f"{path} records no normalization.averageImage")
    try:
        mean = np.asarray(average, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    except (TypeError, ValueError) as error:
        raise ConversionError(
            f"{path}: normalization.averageImage is not an RGB colour or image ({error})"
        ) from None
    if not np.isfinite(mean).all():
        raise ConversionError(f"{path}: normalization.averageImage is not finite")
    return {"mean": mean.tolist(), "std": [1.0, 1.0, 1.0], "scale": 255.0, "bgr": False}


def first_fitting(
    path: str | Path,
    names: Iterable[str],
    convert_as: Callable[[str | Path, str], dict[str, Any]],
) -> dict[str, Any]:
    """``path`` converted to the first of the architectures ``names`` it fits (its name is
    the result's ``architecture``).

    Raises:
        ConversionError: listing each architecture's reason.
    """
    reasons = []
    for name in names:
        try:
            return convert_as(path, name)
        except ConversionError as error:
            reasons.append(f"{name}: {error}")
    raise ConversionError(f"{path} fits no built-in architecture:\n  " + "\n  ".join(reasons))


def convert_detected(path: str | Path) -> dict[str, Any]:
    """A simplenn file converted to the first built-in architecture it fits."""
    read_simplenn(path)  # a file that is not a simplenn model: that one reason, once
    return first_fitting(path, ARCHITECTURES, convert)
