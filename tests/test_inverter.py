"""Inverter: a clear error, naming the expected shape, for features it cannot decode, and
the training data's mean image it keeps from its checkpoint.

(Files that are not featinv checkpoints: tests/test_checkpoint.py.)
"""

from __future__ import annotations

import pytest
import torch

from featinv import Inverter, save_checkpoint
from featinv.networks import build_networks
from featinv.training import InversionModule


def test_wrong_features_are_refused():
    representation, decoder = build_networks("hog", None, 32, {"width": 8})
    inverter = Inverter(representation, decoder, 32)
    with pytest.raises(ValueError, match=r"\(batch, 31, 4, 4\)"):
        inverter.decode(torch.rand(2, 31, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        inverter.decode(torch.zeros(2, 31, 4, 4, dtype=torch.long))
    assert inverter.decode(torch.rand(2, 31, 4, 4)).shape == (2, 3, 32, 32)


def test_an_inverter_saved_again_keeps_its_training_mean_image(tmp_path):
    module = InversionModule(image_size=32, decoder_options={"width": 8, "max_width": 8})
    module._accumulate_train_images(torch.rand(4, 3, 32, 32))
    inverter = Inverter.load(save_checkpoint(tmp_path / "first.ckpt", module))
    again = Inverter.load(save_checkpoint(tmp_path / "again.ckpt", inverter))
    expected = (module.train_image_sum / module.train_image_count).float()
    assert torch.allclose(inverter.train_mean_image(), expected)
    assert torch.equal(again.train_mean_image(), inverter.train_mean_image())
