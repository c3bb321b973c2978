"""Shared fixtures: real photos from installed packages, tiny and seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featinv.cli.common import quiet_library_warnings
from featinv.data.bundled import TRAIN_PHOTOS, VAL_PHOTOS, photo_path
from featinv.data.images import decode_rgb, resize_shorter_side, to_tensor
from featinv.data.transforms import center_crop

quiet_library_warnings()  # as the command line does: library notices that do not apply


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test builds the bundled shards (once per session) in a temporary cache."""
    monkeypatch.setenv("FEATINV_CACHE", str(tmp_path_factory.getbasetemp() / "featinv-cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def photo_arrays() -> list[np.ndarray]:
    """Five real photos as uint8 arrays (several sizes): the bundled validation photos first."""
    return [decode_rgb(photo_path(name)) for name in (*VAL_PHOTOS, *TRAIN_PHOTOS)[:5]]


@pytest.fixture(scope="session")
def photo_batch(photo_arrays: list[np.ndarray]) -> torch.Tensor:
    """Five real photos as a ``(5, 3, 64, 64)`` batch in [0, 1]."""
    crops = [center_crop(resize_shorter_side(a, 64), 64) for a in photo_arrays]
    return torch.stack([to_tensor(c) for c in crops])


@pytest.fixture
def photo_folder(tmp_path, photo_arrays) -> Path:
    """The five photos as PNG files in a folder (``--images``)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, array in enumerate(photo_arrays):
        Image.fromarray(array).save(folder / f"photo{i}.png")
    return folder
