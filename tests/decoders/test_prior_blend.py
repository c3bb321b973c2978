"""The blend of a decoder's output toward the training data's mean image, and its calibration
on validation photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featinv import Inverter, save_checkpoint
from featinv.decoders import build_decoder
from featinv.decoders.prior_blend import PriorBlend
from featinv.exported import export_decoder
from featinv.representations import build_representation
from featinv.training import InversionModule
from featinv.training.prior_blend import WEIGHTS, BlendStatistics
from tests.helpers import train_steps


def test_the_blend_acts_outside_training_only_and_keeps_its_weight_in_0_1():
    blend = PriorBlend(8)
    images = torch.rand(2, 3, 4, 4)
    assert torch.equal(blend.eval()(images), images)  # weight 1: the identity
    prior = torch.rand(3, 8, 8)
    blend.calibrate(prior, 0.25)
    small = torch.nn.functional.interpolate(prior[None], size=(4, 4), mode="bilinear")
    expected = small + 0.25 * (images - small)
    torch.testing.assert_close(blend(images), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(blend.train()(images), images)  # never in training
    blend.calibrate(prior, 3.0)
    assert float(blend.weight) == 1.0
    blend.calibrate(prior, -1.0)
    assert float(blend.weight) == 0.0


def test_a_decoder_saved_before_the_blend_loads_with_the_identity():
    phi = build_representation("cnn", architecture="tests.helpers:tiny_net", layer="1")
    with_blend = build_decoder(phi, 32, prior_blend=True).eval()
    without = build_decoder(phi, 32, prior_blend=False)
    with_blend.blend.calibrate(torch.rand(3, 32, 32), 0.5)
    with_blend.load_state_dict(without.state_dict())
    assert float(with_blend.blend.weight) == 1.0
    features = phi(torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        assert torch.equal(with_blend(features), without.eval()(features))


def test_the_calibrated_weight_is_the_one_with_the_smallest_mean_distance():
    torch.manual_seed(0)
    images = torch.rand(12, 3, 8, 8)
    prior = images.mean(0) + 0.05
    statistics = BlendStatistics()
    # a reconstruction that knows a little of each photo and adds its own noise
    noisy = prior + 0.5 * (images - prior) + 0.3 * torch.randn_like(images)
    for first in (0, 6):
        statistics.update(images[first : first + 6], noisy[first : first + 6], prior)
    weight, distance = statistics.compute()
    x, y, m = (t.double().flatten(1).numpy() for t in (images, noisy, prior[None]))
    distances = [np.linalg.norm(x - (m + w * (y - m)), axis=1).mean() for w in WEIGHTS.numpy()]
    assert float(weight) == float(WEIGHTS[int(np.argmin(distances))])
    assert 0.0 < float(weight) < 1.0
    assert abs(float(distance) - min(distances)) < 1e-9
    # a perfect reconstruction keeps all of itself
    exact = BlendStatistics()
    exact.update(images, images, prior)
    assert float(exact.compute()[0]) == 1.0


def test_the_calibrated_blend_travels_in_checkpoints_and_exported_files(tmp_path):
    torch.manual_seed(0)
    options = {"architecture": "tests.helpers:tiny_net", "layer": "1", "weights": "random"}
    module = InversionModule(
        representation="cnn",
        representation_options=options,
        image_size=32,
        decoder_options={"width": 8, "max_width": 8, "min_width": 4},
    )
    train_steps(module, {"image": torch.rand(2, 3, 32, 32)}, 2)
    module.decoder.blend.calibrate(torch.rand(3, 32, 32), 0.3)
    checkpoint = save_checkpoint(tmp_path / "m.ckpt", module)
    net = "tests.helpers:tiny_net"
    exported = export_decoder(
        checkpoint, tmp_path / "m", include_representation=True, architecture=net
    )
    images = torch.rand(2, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        expected = module(module.features(images))
    for path in (checkpoint, exported):
        inverter = Inverter.load(path, architecture=net)
        assert float(inverter.decoder.blend.weight) == pytest.approx(0.3)
        torch.testing.assert_close(inverter.reconstruct(images), expected)
