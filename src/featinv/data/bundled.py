"""The embedded default data set: real photos that ship inside installed packages.

No download is possible on the machines this runs on, so ``python train.py`` with no arguments
trains on the colour camera photographs in scikit-image's data directory (plus procedural
images made in the loader, ``featinv.data.procedural``), and validates on photos from *other
packages*: matplotlib's sample data and scikit-learn's sample images. The split is by source,
so the validation error predicts performance on photos from anywhere else, not on other crops
of the photos (or of the photo collection) the decoder was trained on.

The set is written once into webdataset shards under the cache directory and streamed from
there like any other shards, so the default run exercises the same path as ImageNet training.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from featinv.data.images import decode_rgb, encode_image, resize_shorter_side
from featinv.data.shard_writer import write_samples
from featinv.data.transforms import center_crop

log = logging.getLogger(__name__)

#: Bumped whenever the photo lists or the sample layout change, so stale caches are not reused.
BUNDLED_VERSION = 3

#: The colour camera photographs scikit-image ships. Left out: its grey photographs (camera,
#: coins, moon, page, text, clock, and the brick, grass and gravel textures), measured to make
#: the decoder worse on photos from elsewhere: a HOG decoder's colours come from its prior,
#: and grey training targets pull that prior towards grey; synthetic images (chessboards,
#: logos, phantoms); and the microscopy, fundus and deep-sky images, whose colours no
#: everyday photo has.
TRAIN_PHOTOS = (
    "skimage:astronaut.png",
    "skimage:chelsea.png",
    "skimage:coffee.png",
    "skimage:rocket.jpg",
    "skimage:motorcycle_left.png",
    "skimage:motorcycle_right.png",
)
#: Photos from packages the training split does not use.
VAL_PHOTOS = (
    "matplotlib:grace_hopper.jpg",
    "sklearn:china.jpg",
    "sklearn:flower.jpg",
)

#: Training photos are stored with this shorter side; random crops of 1/4 to all of it
#: (``data.crop_scale``) then give close-ups and whole-photo views alike.
TRAIN_SIDE = 256
#: Validation views of each photo, each stored at this side: the central square (the whole
#: photo, as an evaluation at this size sees it), the squares at both ends of the longer side,
#: and a 2x2 tiling of the central square at twice the size.
VAL_TILE = 128


def _package_folder(package: str) -> Path:
    """Where an installed package lives, found without importing it (imports can be slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package} that ships bundled photos is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_path(name: str) -> Path:
    """Resolve ``"skimage:astronaut.png"`` (also ``matplotlib:``, ``sklearn:``) to a file."""
    package, filename = name.split(":", 1)
    if package == "skimage":
        root = _package_folder("skimage") / "data"
    elif package == "matplotlib":
        root = _package_folder("matplotlib") / "mpl-data" / "sample_data"
    elif package == "sklearn":
        root = _package_folder("sklearn") / "datasets" / "images"
    else:
        raise ValueError(f"unknown photo source {package!r} in {name!r}")
    path = root / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled photo {name} not found at {path}; reinstall scikit-image, matplotlib "
            "and scikit-learn"
        )
    return path


def cache_dir() -> Path:
    """Where the bundled shards live: ``$FEATINV_CACHE`` or ``~/.cache/featinv``."""
    return Path(os.environ.get("FEATINV_CACHE", Path.home() / ".cache" / "featinv"))


def _key(name: str) -> str:
    return name.split(":", 1)[1].rsplit(".", 1)[0]


def _train_samples() -> Iterator[dict[str, Any]]:
    for name in TRAIN_PHOTOS:
        photo = resize_shorter_side(decode_rgb(photo_path(name)), TRAIN_SIDE)
        yield {"__key__": _key(name), "jpg": encode_image(photo)}


def validation_views(photo: np.ndarray) -> dict[str, np.ndarray]:
    """The named ``VAL_TILE``-pixel views of one validation photo (see ``VAL_TILE``)."""
    small = resize_shorter_side(photo, VAL_TILE)
    height, width = small.shape[:2]
    views = {
        "whole": center_crop(small, VAL_TILE),
        "start": small[:VAL_TILE, :VAL_TILE],
        "end": small[height - VAL_TILE :, width - VAL_TILE :],
    }
    big = center_crop(resize_shorter_side(photo, 2 * VAL_TILE), 2 * VAL_TILE)
    for row in range(2):
        for col in range(2):
            views[f"tile{row}{col}"] = big[
                row * VAL_TILE : (row + 1) * VAL_TILE, col * VAL_TILE : (col + 1) * VAL_TILE
            ]
    return {name: np.ascontiguousarray(view) for name, view in views.items()}


def _val_samples() -> Iterator[dict[str, Any]]:
    for name in VAL_PHOTOS:
        for view, pixels in validation_views(decode_rgb(photo_path(name))).items():
            yield {"__key__": f"{_key(name)}_{view}", "jpg": encode_image(pixels)}


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
            write_samples(_train_samples(), staging / "train", samples_per_shard=2)
            # 21 views in 5 shards: up to 5 DDP processes each get whole shards
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
