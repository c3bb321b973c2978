"""Inverter: clear errors for files that are not featinv checkpoints and for bad features."""

from __future__ import annotations

import pytest
import torch

from featinv import Inverter, NotAFeatinvCheckpointError
from featinv.networks import build_networks


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Inverter.from_checkpoint(tmp_path / "nope.ckpt")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(NotAFeatinvCheckpointError, match="not a readable PyTorch checkpoint"):
        Inverter.from_checkpoint(path)


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(1)}}, path)
    with pytest.raises(NotAFeatinvCheckpointError, match="not a featinv checkpoint"):
        Inverter.from_checkpoint(path)


def test_wrong_features_are_refused():
    representation, decoder = build_networks("hog", None, 32, {"width": 8})
    inverter = Inverter(representation, decoder, 32)
    with pytest.raises(ValueError, match=r"\(batch, 31, 4, 4\)"):
        inverter.decode(torch.rand(2, 31, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        inverter.decode(torch.zeros(2, 31, 4, 4, dtype=torch.long))
    assert inverter.decode(torch.rand(2, 31, 4, 4)).shape == (2, 3, 32, 32)
