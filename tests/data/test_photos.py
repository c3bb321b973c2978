"""Photos for evaluation read the same fields and files as training does."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from featinv.data.images import decode_rgb
from featinv.data.photos import NoPhotosError, load_photos
from tests.helpers import add_member


def _encoded(array: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, lossless=True)
    return buffer.getvalue()


def test_shards_with_every_image_field_the_trainer_reads(tmp_path, photo_arrays):
    """jpg, png and webp samples all load (evaluation once ignored webp); a broken one is
    skipped and noted."""
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w"):
        pass
    small = [a[:48, :48] for a in photo_arrays[:3]]
    add_member(shard, "a.png", _encoded(small[0], "PNG"))
    add_member(shard, "b.webp", _encoded(small[1], "WEBP"))
    add_member(shard, "c.jpg", b"\xff\xd8 broken")
    add_member(shard, "d.png", _encoded(small[2], "PNG"))
    photos = load_photos(shards=str(shard), limit=10)
    assert len(photos.arrays) == 3
    assert np.array_equal(photos.arrays[1], small[1])  # the webp, decoded losslessly
    assert any("skipped 1 undecodable" in note for note in photos.notes)
    assert any("asked for 10 images" in note for note in photos.notes)


def test_folders_and_the_bundled_set(tmp_path, photo_arrays):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, array in enumerate(photo_arrays[:3]):
        Image.fromarray(array).save(folder / f"p{i}.webp", lossless=True)
    photos = load_photos(folder, limit=2)
    assert len(photos.arrays) == 2 and photos.notes == []
    assert np.array_equal(photos.arrays[0], decode_rgb(folder / "p0.webp"))
    bundled = load_photos(limit=5)
    assert len(bundled.arrays) == 5 and bundled.source == "the bundled validation photos"


def test_too_few_photos_is_a_clear_error(tmp_path, photo_arrays):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoPhotosError, match="no images found in"):
        load_photos(tmp_path / "empty")
    Image.fromarray(photo_arrays[0]).save(tmp_path / "one.png")
    with pytest.raises(NoPhotosError, match="need at least 2 decodable images"):
        load_photos(tmp_path, limit=5)
