"""Sparse SIFT on a grid (Dosovitskiy & Brox, Sect. 2.2, "Sparse SIFT"), from VLFeat itself.

Keypoints and descriptors come from ``vlsift`` (VLFeat's own SIFT, default settings, on the
grey image at 0-255). The image is split into ``d x d`` cells (d = 4); a cell without a
keypoint holds zeros, a cell with one holds ``(f_i, x_i mod d, y_i mod d, sin a_i, cos a_i,
log s_i)``: 128 + 5 = 133 channels. Where several keypoints fall in one cell, one is chosen at
random with a fixed seed, so the same image always gives the same map.

Descriptors are scaled from VLFeat's uint8 (``min(512 v, 255)``) to [0, 1] by dividing by 255.

SIFT runs on the CPU, per image (about 20 ms at 256x256): in loader workers, or once into the
shards (``featinv-shards --features sift``), never inside the training step.
"""

from __future__ import annotations

import io
import logging
import math
from typing import Any, ClassVar

import numpy as np
import torch

from featinv.ops import GREY_WEIGHTS, as_pair
from featinv.reliability import warn_sometimes
from featinv.representations.base import Representation, check_images, register

log = logging.getLogger(__name__)

DESCRIPTOR_SIZE = 128
NUM_CHANNELS = DESCRIPTOR_SIZE + 5


def grey_255(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB (or float in [0, 1]) -> float32 grey on the 0-255 scale."""
    scale = 1.0 if rgb.dtype == np.uint8 else 255.0
    grey = rgb.astype(np.float32) @ np.asarray(GREY_WEIGHTS, dtype=np.float32)
    return np.ascontiguousarray(grey * np.float32(scale))


def detect_sift(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VLFeat SIFT keypoints with default settings.

    Args:
        grey: ``(H, W)`` float32 grey image on the 0-255 scale.

    Returns:
        frames ``(N, 4)`` float32 as ``[y, x, sigma, theta]`` (0-based, theta from +x towards
        +y) and descriptors ``(N, 128)`` uint8.
    """
    from vlsift.sift.sift import sift

    frames, descriptors = sift(
        np.ascontiguousarray(grey, dtype=np.float32), compute_descriptor=True
    )
    return frames.reshape(-1, 4).astype(np.float32), descriptors.reshape(-1, DESCRIPTOR_SIZE)


def sift_grid(
    frames: np.ndarray,
    descriptors: np.ndarray,
    height: int,
    width: int,
    cell: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Arrange keypoints on the ``ceil(H/d) x ceil(W/d)`` grid: ``(133, ceil(H/d), ceil(W/d))``.

    Keypoints outside ``[0, W) x [0, H)`` are ignored (that is how a crop keeps only its own).
    """
    grid = np.zeros((NUM_CHANNELS, math.ceil(height / cell), math.ceil(width / cell)), np.float32)
    y, x = frames[:, 0].astype(np.float64), frames[:, 1].astype(np.float64)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    frames, descriptors, x, y = frames[inside], descriptors[inside], x[inside], y[inside]
    if len(frames) == 0:
        return grid
    cy, cx = np.floor(y / cell).astype(int), np.floor(x / cell).astype(int)
    # A seeded shuffle, then the first keypoint of each cell: a uniform random choice among
    # the keypoints of a cell that is the same every time for the same keypoints.
    order = np.random.default_rng(seed).permutation(len(frames))
    cells = (cy * grid.shape[2] + cx)[order]
    _, first = np.unique(cells, return_index=True)
    pick = order[first]
    sigma, theta = frames[pick, 2], frames[pick, 3]
    values = np.concatenate(
        [
            descriptors[pick].astype(np.float32) / 255.0,
            np.stack(
                [
                    np.mod(x[pick], cell),
                    np.mod(y[pick], cell),
                    np.sin(theta),
                    np.cos(theta),
                    np.log(sigma),
                ],
                axis=1,
            ).astype(np.float32),
        ],
        axis=1,
    )
    grid[:, cy[pick], cx[pick]] = values.T
    return grid


def pack_keypoints(frames: np.ndarray, descriptors: np.ndarray) -> dict[str, np.ndarray]:
    """What the shard writer stores per image (``key.sift.npz``): compact, crop-independent."""
    return {"frames": frames.astype(np.float32), "descriptors": descriptors.astype(np.uint8)}


@register
class SparseSIFT(Representation):
    """Sparse SIFT keypoints on a ``cell x cell`` grid, 133 channels (Sect. 2.2).

    Args:
        cell: grid cell side in pixels (the paper's d = 4).
        seed: seed of the random choice among keypoints sharing a cell.
    """

    name = "sift"
    differentiable = False
    runs_in_loader = True
    min_image_size: ClassVar[int] = 16
    stored_field: ClassVar[str | None] = "sift.npz"

    def __init__(self, cell: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.cell = cell
        self.seed = seed
        #: images in which SIFT found no keypoint (their map is all zeros), per process.
        self.empty_maps = 0

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        height, width = as_pair(image_size)
        return (NUM_CHANNELS, math.ceil(height / self.cell), math.ceil(width / self.cell))

    def config(self) -> dict[str, Any]:
        return {"cell": self.cell, "seed": self.seed}

    def map_from_keypoints(
        self, frames: np.ndarray, descriptors: np.ndarray, height: int, width: int
    ) -> np.ndarray:
        """The grid map of keypoints given in this image's coordinates (counts empty maps)."""
        grid = sift_grid(frames, descriptors, height, width, self.cell, self.seed)
        if not grid.any():
            self.empty_maps += 1
            warn_sometimes(
                log,
                self.empty_maps,
                "SIFT found no keypoint in a %dx%d image: all-zero map (%d so far)",
                height,
                width,
                self.empty_maps,
            )
        return grid

    def map_of_image(self, rgb: np.ndarray) -> np.ndarray:
        """The grid map of one ``(H, W, 3)`` uint8 image (what loader workers call)."""
        frames, descriptors = detect_sift(grey_255(rgb))
        return self.map_from_keypoints(frames, descriptors, *rgb.shape[:2])

    def encode_stored(self, rgb: np.ndarray) -> bytes:
        """SIFT keypoints of the pixels a reader will decode, as ``.npz`` bytes."""
        buffer = io.BytesIO()
        np.savez(buffer, **pack_keypoints(*detect_sift(grey_255(rgb))))
        return buffer.getvalue()

    def loader_features(
        self,
        crop: np.ndarray,
        stored: bytes | None = None,
        window: tuple[int, int] | None = None,
        key: str = "?",
    ) -> np.ndarray:
        """The crop's map: moved from the keypoints stored for the whole image when the crop
        is a plain window of it, computed on the crop otherwise (flipped or resized crops)."""
        if stored is not None and window is not None:
            try:
                with np.load(io.BytesIO(stored), allow_pickle=False) as keypoints:
                    frames = keypoints["frames"].copy()
                    descriptors = keypoints["descriptors"]
            except (OSError, ValueError, KeyError) as error:
                log.warning("unreadable stored SIFT of %s (%s): recomputed", key, error)
            else:
                frames[:, 0] -= window[0]
                frames[:, 1] -= window[1]
                return self.map_from_keypoints(frames, descriptors, *crop.shape[:2])
        return self.map_of_image(crop)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Maps of a batch (CPU, one image at a time; for evaluation, not training steps)."""
        check_images(images, self.min_image_size, "SparseSIFT")
        rgb = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        rgb = rgb.permute(0, 2, 3, 1).cpu().numpy()
        maps = np.stack([self.map_of_image(image) for image in rgb])
        return torch.from_numpy(maps).to(images.device)

    def extra_repr(self) -> str:
        return f"cell={self.cell}, seed={self.seed}"
