"""Faults in the data: each case is converted and used, or skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest

from featinv.data.images import encode_image
from featinv.data.shard_writer import write_shards
from featinv.data.shards import expand_shards, shard_pipeline
from featinv.data.transforms import EvalTransform, TrainTransform
from tests.helpers import add_member


def _read(pattern, size: int = 32) -> tuple[list[str], dict]:
    batches = list(shard_pipeline(str(pattern), EvalTransform(size), 16, train=False))
    keys = [k for b in batches for k in b["key"]]
    return keys, batches[-1] if batches else {}


def test_corrupt_jpeg_bytes_in_a_shard_are_skipped_and_counted(clean_shard):
    add_member(clean_shard, "bad.jpg", b"\xff\xd8\xff\xe0" + b"\x13" * 300)
    keys, last = _read(clean_shard)
    assert sorted(keys) == ["p0", "p1", "p2", "p3"] and last["skipped"] == 1


def test_truncated_jpeg_in_a_shard_is_skipped_and_counted(clean_shard):
    good = encode_image(np.full((48, 48, 3), 80, np.uint8))
    add_member(clean_shard, "cut.jpg", good[: len(good) // 2])
    keys, last = _read(clean_shard)
    assert "cut" not in keys and last["skipped"] == 1


def test_zero_byte_sample_is_skipped_and_counted(clean_shard):
    add_member(clean_shard, "empty.jpg", b"")
    keys, last = _read(clean_shard)
    assert len(keys) == 4 and last["skipped"] == 1


def test_truncated_tar_keeps_its_complete_samples_and_counts_the_error(clean_shard, tmp_path):
    data = clean_shard.read_bytes()
    cut = tmp_path / "cut-000000.tar"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    keys, last = _read(cut)
    assert 1 <= len(keys) < 4 and keys == ["p0", "p1", "p2", "p3"][: len(keys)]
    assert last["shard_errors"] >= 1


def test_duplicate_key_in_a_shard_keeps_the_first_and_counts(tmp_path, photo_arrays):
    """A member written twice in a row (the usual way a tar gets a duplicate)."""
    shard = tmp_path / "dup-000000.tar"
    for name, array in [
        ("a.jpg", photo_arrays[0]),
        ("a.jpg", photo_arrays[1]),
        ("b.jpg", photo_arrays[2]),
    ]:
        add_member(shard, name, encode_image(array))
    keys, last = _read(shard)
    assert keys == ["a", "b"] and last["shard_errors"] == 1


def test_writer_renames_duplicate_keys_instead_of_losing_a_file(tmp_path, photo_arrays):
    from PIL import Image

    folder = tmp_path / "dups"
    folder.mkdir()
    Image.fromarray(photo_arrays[0]).save(folder / "photo.jpg")
    Image.fromarray(photo_arrays[1]).save(folder / "photo.png")
    summary = write_shards(folder, tmp_path / "out", size=32, progress=False)
    assert summary.written == 2 and len(summary.renamed) == 1
    keys, _ = _read(tmp_path / "out" / "shard-000000.tar")
    assert sorted(keys) == ["photo", "photo_dup1"]


def test_odd_image_modes_are_converted_and_broken_files_skipped(odd_images, tmp_path):
    summary = write_shards(odd_images, tmp_path / "out", size=32, progress=False)
    assert summary.written == 5  # grey, RGBA, CMYK, 16-bit, palette: converted and used
    assert sorted(p.rsplit("/", 1)[1] for p, _ in summary.skipped) == [
        "corrupt.jpg",
        "empty.jpg",
        "truncated.jpg",
    ]
    keys, last = _read(tmp_path / "out" / "shard-000000.tar")
    assert sorted(keys) == ["cmyk", "grey", "palette", "rgba", "sixteen"] and last["skipped"] == 0


def test_image_smaller_than_the_crop_is_upscaled_and_counted(tmp_path, photo_arrays):
    from PIL import Image

    folder = tmp_path / "small"
    folder.mkdir()
    Image.fromarray(photo_arrays[0][:20, :30]).save(folder / "tiny.png")
    write_shards(folder, tmp_path / "out", size=20, progress=False)
    transform = TrainTransform(40, seed=0)
    # one pass over the shard (in order, once), so exactly one image is decoded
    pipeline = shard_pipeline(str(tmp_path / "out" / "*.tar"), transform, 1, train=False)
    batches = list(pipeline)
    assert len(batches) == 1 and batches[0]["image"].shape == (1, 3, 40, 40)
    assert transform.upscaled == 1
    large_enough = TrainTransform(20, seed=0)
    large_enough.crop(photo_arrays[0][:20, :30])
    assert large_enough.upscaled == 0


def test_shard_pattern_matching_nothing_names_the_pattern(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"missing-\{000000..000009\}.tar.*matches no files"
    ):
        expand_shards(str(tmp_path / "missing-{000000..000009}.tar"))
