"""The embedded default data set: real photos that ship inside installed packages.

No download is possible on the machines this runs on, so ``python train.py`` with no arguments
trains on the photographs in scikit-image's data directory and matplotlib's sample data. The
train and validation splits are made of *different photos*, so the validation error measures
generalization to unseen images, not memorization of other crops of the same photo.

The set is written once into webdataset shards under the cache directory and streamed from
there like any other shards, so the default run exercises the same path as ImageNet training.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import skimage

from featinv.data.images import decode_rgb, encode_image, resize_shorter_side
from featinv.data.shard_writer import write_samples
from featinv.data.transforms import center_crop

log = logging.getLogger(__name__)

#: Bumped whenever the photo lists or the sample layout change, so stale caches are not reused.
BUNDLED_VERSION = 2

#: Camera photographs only: synthetic images (chessboards, logos, phantoms) are left out.
TRAIN_PHOTOS = (
    "skimage:astronaut.png",
    "skimage:rocket.jpg",
    "skimage:motorcycle_left.png",
    "skimage:motorcycle_right.png",
    "skimage:hubble_deep_field.jpg",
    "skimage:retina.jpg",
    "skimage:ihc.png",
    "skimage:brick.png",
    "skimage:grass.png",
    "skimage:gravel.png",
    "skimage:moon.png",
    "skimage:cell.png",
    "skimage:clock_motion.png",
    "skimage:page.png",
    "skimage:text.png",
)
VAL_PHOTOS = (
    "skimage:chelsea.png",
    "skimage:coffee.png",
    "matplotlib:grace_hopper.jpg",
    "skimage:camera.png",
    "skimage:coins.png",
)

#: Each training photo is stored at several scales: random crops of it then cover both
#: whole-object views and close-ups, which a 15-photo set badly needs.
TRAIN_SCALES = (64, 96, 128, 192, 256)
#: Validation views: the whole photo at this size, plus a 2x2 tiling of it at twice the size.
VAL_TILE = 128


def photo_path(name: str) -> Path:
    """Resolve ``"skimage:astronaut.png"`` / ``"matplotlib:grace_hopper.jpg"`` to a file."""
    package, filename = name.split(":", 1)
    if package == "skimage":
        root = Path(skimage.__file__).parent / "data"
    elif package == "matplotlib":
        root = Path(matplotlib.get_data_path()) / "sample_data"
    else:
        raise ValueError(f"unknown photo source {package!r} in {name!r}")
    path = root / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled photo {name} not found at {path}; reinstall scikit-image / matplotlib"
        )
    return path


def cache_dir() -> Path:
    """Where the bundled shards live: ``$FEATINV_CACHE`` or ``~/.cache/featinv``."""
    return Path(os.environ.get("FEATINV_CACHE", Path.home() / ".cache" / "featinv"))


def _key(name: str) -> str:
    return name.split(":", 1)[1].rsplit(".", 1)[0]


def _train_samples() -> Iterator[dict[str, Any]]:
    for name in TRAIN_PHOTOS:
        photo = decode_rgb(photo_path(name))
        for scale in TRAIN_SCALES:
            yield {
                "__key__": f"{_key(name)}_s{scale}",
                "jpg": encode_image(resize_shorter_side(photo, scale)),
            }


def _val_samples() -> Iterator[dict[str, Any]]:
    for name in VAL_PHOTOS:
        photo = decode_rgb(photo_path(name))
        whole = center_crop(resize_shorter_side(photo, VAL_TILE), VAL_TILE)
        yield {"__key__": f"{_key(name)}_whole", "jpg": encode_image(whole)}
        big = center_crop(resize_shorter_side(photo, 2 * VAL_TILE), 2 * VAL_TILE)
        for row in range(2):
            for col in range(2):
                tile = big[
                    row * VAL_TILE : (row + 1) * VAL_TILE, col * VAL_TILE : (col + 1) * VAL_TILE
                ]
                yield {
                    "__key__": f"{_key(name)}_tile{row}{col}",
                    "jpg": encode_image(np.ascontiguousarray(tile)),
                }


def bundled_shards(root: str | Path | None = None) -> dict[str, str]:
    """Build the bundled shards on first use (cached) and return their train/val patterns.

    The shards are written into a temporary folder and renamed into place, so an interrupted
    build never leaves a half-written cache that later runs would trust.
    """
    base = Path(root) if root is not None else cache_dir()
    target = base / f"bundled-v{BUNDLED_VERSION}"
    if not (target / "COMPLETE").exists():
        log.info("building the bundled photo shards in %s", target)
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".bundled-", dir=base))
        staging.chmod(0o755)
        try:
            write_samples(
                _train_samples(), staging / "train", samples_per_shard=len(TRAIN_SCALES) * 8
            )
            # one shard per validation photo: up to 5 DDP processes each get whole shards
            write_samples(_val_samples(), staging / "val", samples_per_shard=5)
            (staging / "COMPLETE").write_text("ok\n")
            try:
                staging.rename(target)
            except OSError:
                # Another process (a second DDP rank) finished first: use its copy.
                if not (target / "COMPLETE").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {
        "train": str(target / "train" / "shard-*.tar"),
        "val": str(target / "val" / "shard-*.tar"),
    }
