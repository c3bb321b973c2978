"""Crops and flips of decoded uint8 images, done in the loader workers before batching.

Each transform also reports where its crop came from (``Box``), so that features stored with
the full image in a shard (SIFT keypoints) can be moved into the crop instead of recomputed.
"""

from __future__ import annotations

import logging
import math
import os
from typing import NamedTuple

import numpy as np
import torch
import webdataset as wds

from featinv.data.images import resize_shorter_side, to_tensor
from featinv.reliability import warn_sometimes

log = logging.getLogger(__name__)


class Box(NamedTuple):
    """Where a crop lies in the decoded image: offset, resize factor applied first, flip."""

    top: int
    left: int
    scale: float
    flipped: bool


class TrainTransform:
    """Random ``size x size`` crop and horizontal flip (Dosovitskiy & Brox train on crops).

    Images whose shorter side is below ``size`` are first upscaled to it and counted in
    ``upscaled``: a shard written at a smaller size still trains, but the user is told.

    Args:
        size: side of the crops.
        flip: random horizontal flips.
        seed: seed of the crops (each DDP rank and loader worker derives its own stream).
        crop_scale: ``(low, high)``: instead of a ``size``-pixel window at the stored
            resolution, take a square whose side is a fraction of the image's shorter side,
            drawn log-uniformly from ``[low, high]``, and resize it to ``size`` (antialiased).
            ``(1, 1)`` is the whole photo, as an evaluation sees it; small fractions are
            close-ups. ``None`` (default) keeps the stored resolution.
    """

    def __init__(
        self,
        size: int,
        flip: bool = True,
        seed: int | None = None,
        crop_scale: tuple[float, float] | None = None,
    ) -> None:
        if crop_scale is not None and not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        self.size = size
        self.flip = flip
        self.seed = seed
        self.crop_scale = crop_scale
        self.upscaled = 0
        self._rng: np.random.Generator | None = None
        self._pid = -1

    @property
    def rng(self) -> np.random.Generator:
        # Made lazily in each process: a generator created before the loader forks its workers
        # would be copied into all of them, and every worker would crop the same way.
        if self._rng is None or self._pid != os.getpid():
            # One stream per DDP rank and loader worker: a shared seed must not make two
            # ranks crop alike.
            rank, _, worker, _ = wds.utils.pytorch_worker_info()
            entropy = self.seed if self.seed is not None else np.random.SeedSequence().entropy
            self._rng = np.random.default_rng([entropy, rank, worker])
            self._pid = os.getpid()
        return self._rng

    def crop(self, array: np.ndarray) -> tuple[np.ndarray, Box]:
        """The uint8 crop (a view of ``array``) and where it came from."""
        if self.crop_scale is not None:
            return self._scaled_crop(array)
        array, scale = _at_least(array, self.size, self)
        height, width = array.shape[:2]
        top = int(self.rng.integers(0, height - self.size + 1))
        left = int(self.rng.integers(0, width - self.size + 1))
        crop = array[top : top + self.size, left : left + self.size]
        return self._flip(crop, Box(top, left, scale, False))

    def _scaled_crop(self, array: np.ndarray) -> tuple[np.ndarray, Box]:
        height, width = array.shape[:2]
        low, high = self.crop_scale
        fraction = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        side = max(1, min(round(fraction * min(height, width)), height, width))
        top = int(self.rng.integers(0, height - side + 1))
        left = int(self.rng.integers(0, width - side + 1))
        window = array[top : top + side, left : left + side]
        crop = resize_shorter_side(window, self.size) if side != self.size else window
        return self._flip(crop, Box(top, left, self.size / side, False))

    def _flip(self, crop: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
        flipped = bool(self.flip and self.rng.random() < 0.5)
        if flipped:
            # torch's flip copies ~10x faster than NumPy's negative-stride copy
            crop = torch.from_numpy(crop).flip(1).numpy()
        # otherwise a view: the batch collation copies it once, straight into the batch
        return crop, box._replace(flipped=flipped)


class EvalTransform:
    """Resize the shorter side to ``resize`` (default: ``size``), then centre-crop ``size``."""

    def __init__(self, size: int, resize: int | None = None) -> None:
        self.size = size
        self.resize = resize or size
        self.upscaled = 0

    def crop(self, array: np.ndarray) -> tuple[np.ndarray, Box]:
        """The uint8 crop and where it came from."""
        scale = self.resize / min(array.shape[:2])
        array = resize_shorter_side(array, self.resize)
        array, upscale = _at_least(array, self.size, self)
        height, width = array.shape[:2]
        top, left = (height - self.size) // 2, (width - self.size) // 2
        crop = array[top : top + self.size, left : left + self.size]
        return np.ascontiguousarray(crop), Box(top, left, scale * upscale, False)

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        """The central crop as a ``(3, size, size)`` float tensor in [0, 1] (evaluation)."""
        return to_tensor(self.crop(array)[0])


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` window of an ``(H, W, C)`` array at least that large."""
    height, width = array.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return array[top : top + size, left : left + size]


def _at_least(
    array: np.ndarray, size: int, owner: TrainTransform | EvalTransform
) -> tuple[np.ndarray, float]:
    """Upscale (and count) an image whose shorter side is below ``size``; return the factor."""
    if min(array.shape[:2]) >= size:
        return array, 1.0
    owner.upscaled += 1
    warn_sometimes(
        log,
        owner.upscaled,
        "image of %dx%d is smaller than the %d-pixel crop: upscaled (%d so far in this "
        "worker); write shards with a larger --size to avoid this",
        array.shape[0],
        array.shape[1],
        size,
        owner.upscaled,
    )
    return resize_shorter_side(array, size), size / min(array.shape[:2])
