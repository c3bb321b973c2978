"""Parity with the programs that write Keras files: the files Keras 3 (torch backend) and
Keras 2 (``tf_keras``) save for VGG networks convert into featinv networks that give Keras's
own activations. Each Keras runs in its own process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

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
np.savez(f"{out}/reference.npz", image=image, relu3_3=conv3, relu5_3=conv5)
"""


@pytest.mark.slow
def test_files_keras_writes_convert_to_the_same_network(tmp_path):
    """Parity with Keras itself: the files a trained Keras 3 model writes (``.weights.h5``
    with its optimizer's state, ``.keras``, the legacy whole-model ``.h5``) give featinv's
    VGG-16 Keras's activations."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (pip install keras; it runs on the torch backend)")
    done = subprocess.run(
        [sys.executable, "-c", KERAS_REFERENCE, str(tmp_path)],
        env={**os.environ, "KERAS_BACKEND": "torch"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reference = np.load(tmp_path / "reference.npz")
    image = torch.from_numpy(reference["image"]).permute(0, 3, 1, 2)
    for source in ("vgg16.weights.h5", "vgg16.keras", "vgg16.h5"):
        target = tmp_path / f"{source}.pth"
        convert_weights([str(tmp_path / source), str(target)])
        for tap in ("relu3_3", "relu5_3"):
            expected = torch.from_numpy(reference[tap]).permute(0, 3, 1, 2)
            assert expected.std() > 0  # not a dead layer: the comparison can fail
            phi = build_representation("cnn", architecture="vgg16", layer=tap, weights=str(target))
            with torch.no_grad():
                torch.testing.assert_close(
                    phi(image), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())
                )


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
    done = subprocess.run(
        [python, "-c", TF_KERAS_REFERENCE, str(tmp_path)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reference = np.load(tmp_path / "reference.npz")
    image = torch.from_numpy(reference["image"]).permute(0, 3, 1, 2)
    cases = [
        (f"{a}_{kind}.h5", a, a, []) for a in ("vgg16", "vgg19") for kind in ("weights", "model")
    ]
    for source, architecture, key, options in [
        *cases,
        ("tuned_model.h5", "vgg16", "tuned", ["--convolutions-only"]),
    ]:
        target = tmp_path / f"{source}.pth"
        convert_weights([str(tmp_path / source), str(target), *options])
        assert torch.load(target, weights_only=True)["architecture"] == architecture
        for tap in ("relu3_3", "relu5_3"):
            if f"{key}/{tap}" not in reference:
                continue
            expected = torch.from_numpy(reference[f"{key}/{tap}"]).permute(0, 3, 1, 2)
            assert expected.std() > 0  # not a dead layer: the comparison can fail
            phi = build_representation(
                "cnn", architecture=architecture, layer=tap, weights=str(target)
            )
            with torch.no_grad():
                torch.testing.assert_close(
                    phi(image), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())
                )
