"""Helpers for the fault suite: small real shards with faults injected."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featinv.data.images import encode_image, resize_shorter_side
from tests.helpers import add_member


@pytest.fixture
def clean_shard(tmp_path, photo_arrays) -> Path:
    """A shard of four real photos (48 px), keys p0..p3."""
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w"):
        pass
    for i, array in enumerate(photo_arrays[:4]):
        add_member(shard, f"p{i}.jpg", encode_image(resize_shorter_side(array, 48)))
    return shard


@pytest.fixture
def odd_images(tmp_path) -> Path:
    """A folder of grey, RGBA, CMYK, 16-bit and palette images plus broken files."""
    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 40), 128, np.uint8)]), "RGBA").save(
        folder / "rgba.png"
    )
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(rgb).quantize(colors=16).save(folder / "palette.png")
    good = encode_image(rgb)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "corrupt.jpg").write_bytes(
        b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 500, dtype=np.uint8))
    )
    (folder / "empty.jpg").write_bytes(b"")
    return folder
