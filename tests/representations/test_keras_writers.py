"""Parity with the programs that write Keras files: the files Keras 3 (torch backend) and
Keras 2 (``tf_keras``) save for VGG networks convert into featinv networks that give Keras's
own activations. Each Keras runs in its own process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from featinv.cli.convert_weights import main as convert_weights
from featinv.representations import build_representation

#: Run by Keras itself (torch backend, in its own process): a VGG-16 without its top, compiled
#: and fitted one step (so its file holds optimizer state), saved the three ways Keras 3 saves, and
#: its block3_conv3 / block5_conv3 activations on an image through Keras's preprocessing.
KERAS_REFERENCE = """
import sys
import numpy as np
import keras

out = sys.argv[1]
keras.utils.set_random_seed(0)
model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
model.compile(optimizer="adam", loss="mse")
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
model.fit(x, 0.5 * model.predict(x, verbose=0), epochs=1, verbose=0)
model.save_weights(f"{out}/vgg16.weights.h5")
model.save(f"{out}/vgg16.keras")
model.save(f"{out}/vgg16.h5")  # the legacy format: Keras 2's layer_names / weight_names
image = rng.uniform(0, 1, (1, 32, 32, 3)).astype("float32")
names = ("block3_conv3", "block5_conv3")
taps = keras.Model(model.input, [model.get_layer(name).output for name in names])
conv3, conv5 = taps.predict(keras.applications.vgg16.preprocess_input(image * 255), verbose=0)
np.savez(f"{out}/reference.npz", image=image, **{"vgg16/relu3_3": conv3, "vgg16/relu5_3": conv5})
"""


def _written_by(python: str, script: str, folder: Path, env: dict[str, str]) -> Any:
    """Run a Keras ``script`` in ``python`` (its own process) and load what it computed."""
    done = subprocess.run(
        [python, "-c", script, str(folder)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(folder / "reference.npz")


def _assert_converts_to_the_same_network(
    reference: Any, key: str, source: Path, architecture: str, *options: str
) -> None:
    """``source`` converted gives ``architecture`` and, at every tap the reference holds
    under ``key``, Keras's activations to 1e-4 of their largest."""
    image = torch.from_numpy(reference["image"]).permute(0, 3, 1, 2)
    target = source.with_name(source.name + ".pth")
    convert_weights([str(source), str(target), *options])
    assert torch.load(target, weights_only=True)["architecture"] == architecture
    taps = [name.split("/")[1] for name in reference.files if name.startswith(f"{key}/")]
    assert taps
    for tap in taps:
        expected = torch.from_numpy(reference[f"{key}/{tap}"]).permute(0, 3, 1, 2)
        assert expected.std() > 0  # not a dead layer: the comparison can fail
        phi = build_representation("cnn", architecture=architecture, layer=tap, weights=str(target))
        with torch.no_grad():
            torch.testing.assert_close(
                phi(image), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())
            )


@pytest.mark.slow
def test_files_keras_writes_convert_to_the_same_network(tmp_path):
    """Parity with Keras itself: the files a trained Keras 3 model writes (``.weights.h5``
    with its optimizer's state, ``.keras``, the legacy whole-model ``.h5``) give featinv's
    VGG-16 Keras's activations."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (pip install keras; it runs on the torch backend)")
    reference = _written_by(sys.executable, KERAS_REFERENCE, tmp_path, {"KERAS_BACKEND": "torch"})
    for source in ("vgg16.weights.h5", "vgg16.keras", "vgg16.h5"):
        _assert_converts_to_the_same_network(reference, "vgg16", tmp_path / source, "vgg16")


#: Run by Keras 2 (``tf_keras``, TensorFlow's legacy Keras) in the interpreter that
#: ``FEATINV_TF_KERAS_PYTHON`` names: VGG-16 and VGG-19 without their tops saved as weights
#: and as whole models, and a VGG-16 backbone fine-tuned under a new head, with activations.
TF_KERAS_REFERENCE = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tf_keras as keras

out = sys.argv[1]
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
image = rng.uniform(0, 1, (1, 32, 32, 3)).astype("float32")
x = keras.applications.vgg16.preprocess_input(image * 255)
outputs = {"image": image}
for name, build in (("vgg16", keras.applications.VGG16), ("vgg19", keras.applications.VGG19)):
    model = build(weights=None, include_top=False, input_shape=(32, 32, 3))
    model.save_weights(f"{out}/{name}_weights.h5")
    model.save(f"{out}/{name}_model.h5")
    layers = [model.get_layer(tap).output for tap in ("block3_conv3", "block5_conv3")]
    taps = keras.Model(model.input, layers)
    outputs[f"{name}/relu3_3"], outputs[f"{name}/relu5_3"] = taps.predict(x, verbose=0)
backbone = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
tuned = keras.Sequential([backbone, keras.layers.Flatten(), keras.layers.Dense(10)])
tuned.compile(optimizer="adam", loss="mse")
tuned.fit(x, np.zeros((1, 10), "float32"), epochs=1, verbose=0)
tuned.save(f"{out}/tuned_model.h5")
taps = keras.Model(backbone.input, backbone.get_layer("block5_conv3").output)
outputs["tuned/relu5_3"] = taps.predict(x, verbose=0)
np.savez(f"{out}/reference.npz", **outputs)
"""


@pytest.mark.slow
def test_files_tf_keras_writes_convert_to_the_same_network(tmp_path):
    """Parity with Keras 2 itself, the writer of the ``.h5`` files in ``~/.keras/models``:
    weights files and whole models of VGG-16 and VGG-19, and a fine-tuned VGG-16 backbone
    (with ``--convolutions-only``), give featinv's networks Keras's activations."""
    python = os.environ.get("FEATINV_TF_KERAS_PYTHON")
    if not python:
        pytest.skip(
            "Keras 2 needs TensorFlow (600 MB), not installed here: set "
            "FEATINV_TF_KERAS_PYTHON to a Python with tensorflow and tf-keras"
        )
    reference = _written_by(python, TF_KERAS_REFERENCE, tmp_path, {"TF_CPP_MIN_LOG_LEVEL": "3"})
    for architecture in ("vgg16", "vgg19"):
        for kind in ("weights", "model"):
            source = tmp_path / f"{architecture}_{kind}.h5"
            _assert_converts_to_the_same_network(reference, architecture, source, architecture)
    source = tmp_path / "tuned_model.h5"
    _assert_converts_to_the_same_network(reference, "tuned", source, "vgg16", "--convolutions-only")
