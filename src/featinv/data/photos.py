"""Whole photos for evaluation: from a folder, from shards, or the bundled validation set.

Shards are read with the same field lookup as training (``image_field``), folders with the
same extensions as the shard writer (``list_images``), so a photo that trains also evaluates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featinv.data.bounded_tar import bounded_webdataset
from featinv.data.bundled import bundled_shards
from featinv.data.images import CorruptImageError, decode_rgb, list_images
from featinv.data.shards import expand_shards, image_field

log = logging.getLogger(__name__)


class NoPhotosError(ValueError):
    """The source holds fewer than two decodable photos (the normalizer needs pairs)."""


@dataclass
class Photos:
    """Decoded photos and what the user should know about how they were read."""

    arrays: list[np.ndarray]
    source: str
    notes: list[str] = field(default_factory=list)


def _skip_shard_error(error: Exception) -> bool:
    """webdataset handler: unreadable shard data is logged and passed over."""
    log.warning("skipping unreadable shard data: %s", error)
    return True


def load_photos(
    folder: str | Path | None = None, shards: str | None = None, limit: int = 100
) -> Photos:
    """Up to ``limit`` decoded RGB photos from ``folder``, ``shards`` or, with neither, the
    bundled validation photos. Undecodable files are skipped and counted in the notes.

    Raises:
        NoPhotosError: fewer than 2 decodable photos, or a folder without images.
        FileNotFoundError: a shard pattern that matches nothing.
    """
    if folder is not None:
        files = list_images(folder) if Path(folder).is_dir() else []
        if not files:
            raise NoPhotosError(f"no images found in {folder}")
        source, encoded = str(folder), ((str(path), path) for path in files)
    else:
        pattern = shards if shards is not None else bundled_shards()["val"]
        urls = expand_shards(pattern)
        source = pattern if shards is not None else "the bundled validation photos"
        dataset = bounded_webdataset(
            urls,
            shardshuffle=False,
            nodesplitter=None,
            empty_check=False,
            handler=_skip_shard_error,
        )
        encoded = ((sample.get("__key__", "?"), image_field(sample) or b"") for sample in dataset)
    arrays: list[np.ndarray] = []
    skipped = 0
    for name, data in encoded:
        if len(arrays) == limit:
            break
        try:
            arrays.append(decode_rgb(data))
        except CorruptImageError as error:
            skipped += 1
            log.warning("skipping %s: %s", name, error)
    photos = Photos(arrays, source)
    if skipped:
        photos.notes.append(f"skipped {skipped} undecodable image(s) in {source}")
    if len(arrays) < 2:
        raise NoPhotosError(f"need at least 2 decodable images in {source}, found {len(arrays)}")
    if len(arrays) < limit:
        photos.notes.append(
            f"asked for {limit} images, {source} has {len(arrays)}: using {len(arrays)}"
        )
    return photos
