"""Shards: write -> stream round trip, labels, corrupt data skipped and counted, clear errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featinv.cli.shards import main
from featinv.data.images import (
    IMAGE_EXTENSIONS,
    pixels_to_float,
    resize_shorter_side,
    to_tensor,
)
from featinv.data.shard_writer import write_shards
from featinv.data.shards import IMAGE_FIELDS, expand_shards, shard_pipeline
from featinv.data.transforms import EvalTransform, TrainTransform, center_crop


def _make_class_folders(root: Path, photo_arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Two classes of real photos (PNG files, so the source pixels are exact)."""
    sources = {}
    for i, array in enumerate(photo_arrays[:4]):
        cls = "n001" if i % 2 == 0 else "n002"
        path = root / cls / f"photo{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        sources[f"{cls}__photo{i}"] = array
    return sources


def _read_all(pattern: str, size: int) -> list[dict]:
    batches = list(shard_pipeline(pattern, EvalTransform(size, resize=size), 3, train=False))
    return batches


def test_round_trip_gives_the_same_pixels_and_labels(tmp_path, photo_arrays):
    sources = _make_class_folders(tmp_path / "src", photo_arrays)
    summary = write_shards(
        tmp_path / "src",
        tmp_path / "out",
        size=48,
        samples_per_shard=3,
        image_format="png",
        progress=False,
    )
    assert summary.written == 4 and not summary.skipped
    assert summary.classes == ["n001", "n002"] and len(summary.shards) == 2
    batches = _read_all(str(tmp_path / "out" / "shard-{000000..000001}.tar"), 48)
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(sources)
    for batch in batches:
        for key, image, label in zip(batch["key"], batch["image"], batch["label"], strict=True):
            expected = to_tensor(center_crop(resize_shorter_side(sources[key], 48), 48))
            assert image.dtype == torch.uint8  # converted on the device
            assert torch.equal(pixels_to_float(image), expected)
            assert int(label) == (0 if key.startswith("n001") else 1)


def test_jpeg_round_trip_is_close(tmp_path, photo_arrays):
    sources = _make_class_folders(tmp_path / "src", photo_arrays)
    write_shards(tmp_path / "src", tmp_path / "out", size=48, progress=False)
    for batch in _read_all(str(tmp_path / "out" / "shard-*.tar"), 48):
        for key, image in zip(batch["key"], batch["image"], strict=True):
            expected = to_tensor(center_crop(resize_shorter_side(sources[key], 48), 48))
            assert (pixels_to_float(image) - expected).abs().mean() < 0.02


def test_corrupt_source_files_are_skipped_and_counted(tmp_path, photo_arrays):
    _make_class_folders(tmp_path / "src", photo_arrays)
    (tmp_path / "src" / "n001" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "src" / "n002" / "empty.png").write_bytes(b"")
    summary = write_shards(tmp_path / "src", tmp_path / "out", size=32, progress=False)
    assert summary.written == 4
    assert sorted(Path(p).name for p, _ in summary.skipped) == ["broken.jpg", "empty.png"]
    assert "skipped 2 file(s)" in str(summary)


def test_corrupt_samples_in_a_shard_are_skipped_and_counted(tmp_path, photo_arrays):
    write_shards(
        _flat_folder(tmp_path, photo_arrays[:3]), tmp_path / "out", size=32, progress=False
    )
    shard = tmp_path / "out" / "shard-000000.tar"
    with tarfile.open(shard, "a") as tar:  # append one sample whose bytes are not an image
        data = b"this is not a jpeg"
        info = tarfile.TarInfo("corrupt_sample.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    batches = list(shard_pipeline(str(shard), EvalTransform(32), 10, train=False))
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == 3 and "corrupt_sample" not in keys
    assert batches[-1]["skipped"] == 1


def test_shards_made_by_other_tools_keep_their_files_extensions(tmp_path, photo_arrays):
    """A shard ``tar``-ed from an image folder: ImageNet's upper-case ``.JPEG``, a camera's
    ``.JPG``, TIFF, BMP and GIF (every extension the folder readers take) are all read."""
    assert set(IMAGE_FIELDS) == {extension[1:] for extension in IMAGE_EXTENSIONS}
    shard = tmp_path / "made-by-tar.tar"
    formats = {"JPEG": "JPEG", "JPG": "JPEG", "tiff": "TIFF", "bmp": "BMP", "gif": "GIF"}
    with tarfile.open(shard, "w") as tar:
        for i, (extension, fmt) in enumerate(formats.items()):
            buffer = io.BytesIO()
            Image.fromarray(photo_arrays[i % len(photo_arrays)][:40, :40]).save(buffer, fmt)
            info = tarfile.TarInfo(f"n0144076{i}_1000{i}.{extension}")
            info.size = buffer.tell()
            tar.addfile(info, io.BytesIO(buffer.getvalue()))
    batches = _read_all(str(shard), 32)
    assert sorted(k for b in batches for k in b["key"]) == [
        f"n0144076{i}_1000{i}" for i in range(5)
    ]
    assert batches[-1]["skipped"] == 0


def _flat_folder(tmp_path: Path, arrays: list[np.ndarray]) -> Path:
    folder = tmp_path / "flat"
    folder.mkdir()
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"img{i}.png")
    return folder


def test_flat_folder_has_no_labels(tmp_path, photo_arrays):
    summary = write_shards(
        _flat_folder(tmp_path, photo_arrays[:2]), tmp_path / "out", size=32, progress=False
    )
    assert summary.classes == []
    batch = next(
        iter(shard_pipeline(str(tmp_path / "out" / "*.tar"), EvalTransform(32), 4, train=False))
    )
    assert batch["label"].tolist() == [-1, -1]


def test_training_stream_crops_flips_and_never_ends(tmp_path, photo_arrays):
    write_shards(
        _flat_folder(tmp_path, photo_arrays[:2]), tmp_path / "out", size=64, progress=False
    )
    stream = iter(
        shard_pipeline(str(tmp_path / "out" / "*.tar"), TrainTransform(40, seed=0), 4, train=True)
    )
    batches = [next(stream) for _ in range(5)]  # 20 samples from 2 images: resampled
    assert all(b["image"].shape == (4, 3, 40, 40) for b in batches)


def test_bad_sources_and_patterns_get_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="matches no files"):
        expand_shards(str(tmp_path / "nothing-{000..009}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        write_shards(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(SystemExit, match=r"^featinv-shards: error: .*does not exist"):
        main([str(tmp_path / "missing"), str(tmp_path / "out")])


def test_command_line_writes_shards_and_prints_a_summary(tmp_path, photo_arrays, capsys):
    folder = _flat_folder(tmp_path, photo_arrays[:2])
    main([str(folder), str(tmp_path / "out"), "--size", "32"])
    assert "wrote 2 samples into 1 shard(s)" in capsys.readouterr().out
    assert (tmp_path / "out" / "shard-000000.tar").exists()
