"""Inverter: a clear error, naming the expected shape, for features it cannot decode.

(Files that are not featinv checkpoints: tests/test_checkpoint.py.)
"""

from __future__ import annotations

import pytest
import torch

from featinv import Inverter
from featinv.networks import build_networks


def test_wrong_features_are_refused():
    representation, decoder = build_networks("hog", None, 32, {"width": 8})
    inverter = Inverter(representation, decoder, 32)
    with pytest.raises(ValueError, match=r"\(batch, 31, 4, 4\)"):
        inverter.decode(torch.rand(2, 31, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        inverter.decode(torch.zeros(2, 31, 4, 4, dtype=torch.long))
    assert inverter.decode(torch.rand(2, 31, 4, 4)).shape == (2, 3, 32, 32)
