"""The embedded default data set: real photos, disjoint splits, cached shards."""

from __future__ import annotations

from pathlib import Path

from featinv.data.bundled import TRAIN_PHOTOS, VAL_PHOTOS, bundled_shards, photo_path
from featinv.data.shards import expand_shards, shard_pipeline
from featinv.data.transforms import EvalTransform


def test_train_and_validation_come_from_different_packages():
    def packages(names: tuple[str, ...]) -> set[str]:
        return {name.split(":")[0] for name in names}

    assert not packages(TRAIN_PHOTOS) & packages(VAL_PHOTOS)
    # the stereo pair is one scene: both halves must sit in the same split
    assert {"skimage:motorcycle_left.png", "skimage:motorcycle_right.png"} <= set(TRAIN_PHOTOS)
    assert all(photo_path(name).is_file() for name in TRAIN_PHOTOS + VAL_PHOTOS)


def test_shards_are_built_once_and_cached(tmp_path):
    patterns = bundled_shards(tmp_path)
    shards = expand_shards(patterns["train"]) + expand_shards(patterns["val"])
    stamps = {p: Path(p).stat().st_mtime_ns for p in shards}
    assert bundled_shards(tmp_path) == patterns
    assert {p: Path(p).stat().st_mtime_ns for p in shards} == stamps
    keys = [
        k
        for b in shard_pipeline(patterns["val"], EvalTransform(32), 64, train=False)
        for k in b["key"]
    ]
    assert len(keys) == 7 * len(VAL_PHOTOS)  # whole, both ends, 2x2 tiles
    assert {k.rsplit("_", 1)[0] for k in keys} == {
        n.split(":")[1].rsplit(".", 1)[0] for n in VAL_PHOTOS
    }
