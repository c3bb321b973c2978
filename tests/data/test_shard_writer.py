"""The ImageNet shard writer: layouts, labels, determinism, parallel workers, kill and resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featinv.cli.shards import main
from featinv.data.shard_writer import PROGRESS_DIR, write_shards
from featinv.data.shards import shard_pipeline
from featinv.data.transforms import EvalTransform

CLASSES = ["n01440764", "n01443537", "n01484850"]


def _variants(photo_arrays: list[np.ndarray], count: int, side: int) -> list[np.ndarray]:
    """``count`` distinct real-photo crops (shifted windows, flips) of at least ``side`` px."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        photo = photo_arrays[i % len(photo_arrays)]
        h, w = photo.shape[:2]
        size = min(h, w, side)
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crop = photo[top : top + size, left : left + size]
        out.append(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop))
    return out


def _imagenet_train(root: Path, photo_arrays: list[np.ndarray], per_class: int = 3) -> Path:
    arrays = _variants(photo_arrays, per_class * len(CLASSES), 96)
    for i, array in enumerate(arrays):
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{CLASSES[i % len(CLASSES)]}_{i}.JPEG", quality=95)
    return root


def _imagenet_val(root: Path, photo_arrays: list[np.ndarray], count: int = 7) -> dict[str, str]:
    """A flat val folder; returns image name -> class name (its ground truth)."""
    root.mkdir(parents=True)
    truth = {}
    for i, array in enumerate(_variants(photo_arrays, count, 80)):
        name = f"ILSVRC2012_val_{i + 1:08d}"
        Image.fromarray(array).save(root / f"{name}.JPEG", quality=95)
        truth[name] = CLASSES[0] if i % 2 == 0 else CLASSES[2]
    return truth


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))
    }


def _labels_by_key(pattern: str) -> dict[str, int]:
    batches = shard_pipeline(pattern, EvalTransform(32), 4, train=False)
    return {k: int(c) for b in batches for k, c in zip(b["key"], b["label"], strict=True)}


def test_val_layout_with_a_labels_file_gets_the_training_class_indices(tmp_path, photo_arrays):
    train = write_shards(
        _imagenet_train(tmp_path / "train", photo_arrays), tmp_path / "train-shards", size=48,
        progress=False,
    )  # fmt: skip
    assert train.classes == CLASSES and train.class_counts == dict.fromkeys(CLASSES, 3)
    truth = _imagenet_val(tmp_path / "val", photo_arrays)
    # Caffe-style 'name label' lines with class names; the val set holds only 2 of 3 classes,
    # so indices must come from the training classes.json, not from the labels themselves.
    labels = tmp_path / "val.txt"
    labels.write_text("".join(f"{name}.JPEG {wnid}\n" for name, wnid in truth.items()))
    val = write_shards(
        tmp_path / "val", tmp_path / "val-shards", size=48, samples_per_shard=3, progress=False,
        labels_file=labels, classes=tmp_path / "train-shards" / "classes.json",
    )  # fmt: skip
    assert val.written == 7 and len(val.shards) == 3 and val.layout == "flat folder + labels file"
    expected = {name: CLASSES.index(wnid) for name, wnid in truth.items()}
    assert _labels_by_key(str(tmp_path / "val-shards" / "shard-*.tar")) == expected
    summary = json.loads((tmp_path / "val-shards" / "summary.json").read_text())
    assert summary["class_counts"] == {"n01440764": 4, "n01484850": 3}
    assert "1 class(es) have no samples" in str(val)

    # Kaggle's LOC_val_solution.csv gives the same labels.
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text(
        "ImageId,PredictionString\n"
        + "".join(f"{name},{wnid} 1 2 30 40 {wnid} 3 4 50 60\n" for name, wnid in truth.items())
    )
    write_shards(
        tmp_path / "val", tmp_path / "kaggle-shards", size=48, progress=False,
        labels_file=kaggle, classes=CLASSES,
    )  # fmt: skip
    assert _labels_by_key(str(tmp_path / "kaggle-shards" / "shard-*.tar")) == expected


def test_bad_labels_get_clear_errors(tmp_path, photo_arrays):
    truth = _imagenet_val(tmp_path / "val", photo_arrays, count=3)
    partial = tmp_path / "partial.txt"
    partial.write_text(f"{next(iter(truth))}.JPEG n01440764\n")
    with pytest.raises(ValueError, match=r"2 image\(s\) in .* have no line in"):
        write_shards(tmp_path / "val", tmp_path / "a", labels_file=partial, progress=False)
    devkit = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    devkit.write_text("490\n361\n171\n")
    with pytest.raises(ValueError, match=r"LOC_val_solution\.csv"):
        write_shards(tmp_path / "val", tmp_path / "b", labels_file=devkit, progress=False)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("".join(f"{name} n99999999\n" for name in truth))
    with pytest.raises(ValueError, match="not in the class list"):
        write_shards(
            tmp_path / "val", tmp_path / "c", labels_file=unknown, classes=CLASSES, progress=False
        )


def test_shards_are_byte_identical_whatever_the_number_of_workers(tmp_path, photo_arrays):
    source = _imagenet_train(tmp_path / "train", photo_arrays)
    (source / CLASSES[1] / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    one = write_shards(source, tmp_path / "one", size=40, samples_per_shard=2, progress=False)
    two = write_shards(
        source, tmp_path / "two", size=40, samples_per_shard=2, workers=2, progress=False
    )
    assert len(one.shards) == 5 and _hashes(tmp_path / "one") == _hashes(tmp_path / "two")
    assert one.written == two.written == 9
    assert [Path(p).name for p, _ in two.skipped] == ["corrupt.JPEG"]
    assert "skipped 1 file(s)" in str(two) and two.class_counts == dict.fromkeys(CLASSES, 3)


def test_rerun_keeps_finished_shards_and_refuses_other_settings(tmp_path, photo_arrays):
    source = _imagenet_train(tmp_path / "train", photo_arrays)
    write_shards(source, tmp_path / "out", size=40, samples_per_shard=4, progress=False)
    again = write_shards(source, tmp_path / "out", size=40, samples_per_shard=4, progress=False)
    assert again.resumed == 3 and again.written == 9
    with pytest.raises(ValueError, match=r"other settings.*size"):
        write_shards(source, tmp_path / "out", size=64, samples_per_shard=4, progress=False)


@pytest.mark.slow
def test_killed_midway_and_rerun_gives_the_shards_of_an_uninterrupted_run(tmp_path, photo_arrays):
    source = tmp_path / "train"
    for i, array in enumerate(_variants(photo_arrays, 32, 256)):
        folder = source / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"img{i:03d}.JPEG", quality=95)
    (source / CLASSES[0] / "img999.JPEG").write_bytes(b"")  # corrupt: skipped and counted
    # SIFT keypoints make each shard slow enough (~0.2 s) for the kill to land midway.
    args = [str(source), "--size", "256", "--samples-per-shard", "2", "--features", "sift"]
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "featinv.cli.shards", *args[:1], str(out), *args[1:]]
    process = subprocess.Popen(
        [*command, "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the kill takes the whole process group, workers included
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / PROGRESS_DIR).glob("shard-*.json")):
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    at_kill = _hashes(out)
    assert process.returncode == -signal.SIGKILL
    main([*args[:1], str(tmp_path / "reference"), *args[1:]])  # uninterrupted, one process
    reference = _hashes(tmp_path / "reference")
    assert len(reference) == 17
    assert 1 <= len(at_kill) < len(reference), "the kill did not land midway"
    # whatever carries a shard's name after the kill is a complete, correct shard
    assert all(reference[name] == digest for name, digest in at_kill.items())

    summary = write_shards(*[args[0], out], size=256, samples_per_shard=2, features="sift")
    assert _hashes(out) == reference
    assert summary.resumed >= 1 and summary.written == 32 and len(summary.skipped) == 1
    assert not list(out.glob(".*partial*"))
