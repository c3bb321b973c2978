"""Sparse SIFT grid: cells hold exactly vlsift's keypoints, deterministic, stored == on the fly."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from featinv.data.images import decode_rgb, resize_shorter_side
from featinv.data.shard_writer import write_shards
from featinv.data.shards import SampleDecoder, image_field, shard_pipeline
from featinv.data.transforms import EvalTransform, TrainTransform, center_crop
from featinv.representations import build_representation
from featinv.representations.sift import SparseSIFT, detect_sift, grey_255, sift_grid

pytest.importorskip("vlsift")


@pytest.fixture(scope="module")
def photo(photo_arrays) -> np.ndarray:
    return center_crop(resize_shorter_side(photo_arrays[0], 96), 96)  # the cat, 96x96


def test_every_occupied_cell_holds_the_keypoint_vlsift_returned(photo):
    frames, descriptors = detect_sift(grey_255(photo))
    assert len(frames) > 20
    grid = sift_grid(frames, descriptors, 96, 96)
    assert grid.shape == (133, 24, 24)
    expected = np.concatenate(
        [
            descriptors.astype(np.float32) / 255,
            np.stack(
                [
                    frames[:, 1] % 4,
                    frames[:, 0] % 4,
                    np.sin(frames[:, 3]),
                    np.cos(frames[:, 3]),
                    np.log(frames[:, 2]),
                ],
                1,
            ),
        ],
        1,
    )
    cells = {(int(y // 4), int(x // 4)) for y, x in frames[:, :2]}
    occupied = {tuple(c) for c in np.argwhere(np.abs(grid).sum(0) > 0)}
    assert occupied == cells
    for cy, cx in occupied:
        here = [
            i for i, (y, x) in enumerate(frames[:, :2]) if (int(y // 4), int(x // 4)) == (cy, cx)
        ]
        assert any(np.allclose(grid[:, cy, cx], expected[i], atol=1e-6) for i in here)


def test_same_image_same_map_and_collisions_are_resolved_at_random(photo):
    sift = SparseSIFT()
    first, second = sift.map_of_image(photo), sift.map_of_image(photo)
    assert np.array_equal(first, second)
    frames, descriptors = detect_sift(grey_255(photo))
    # a coarse grid forces collisions; another seed picks other keypoints
    a = sift_grid(frames, descriptors, 96, 96, cell=16, seed=0)
    b = sift_grid(frames, descriptors, 96, 96, cell=16, seed=1)
    assert not np.array_equal(a, b)


def test_image_without_keypoints_gives_a_zero_map_and_is_counted():
    sift = SparseSIFT()
    flat = np.full((48, 48, 3), 128, np.uint8)
    assert not sift.map_of_image(flat).any()
    assert sift.empty_maps == 1


def test_stored_keypoints_equal_sift_computed_on_the_fly(tmp_path, photo_arrays):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, array in enumerate(photo_arrays[:3]):
        Image.fromarray(center_crop(resize_shorter_side(array, 80), 80)).save(folder / f"p{i}.png")
    write_shards(folder, tmp_path / "stored", size=80, features="sift", progress=False)
    write_shards(folder, tmp_path / "plain", size=80, progress=False)
    sift = SparseSIFT()

    def maps(pattern: str, transform) -> dict[str, torch.Tensor]:
        batches = shard_pipeline(pattern, transform, 8, train=False, loader_representation=sift)
        return {k: f for b in batches for k, f in zip(b["key"], b["features"], strict=True)}

    whole = EvalTransform(80)
    stored = maps(str(tmp_path / "stored" / "*.tar"), whole)
    fly = maps(str(tmp_path / "plain" / "*.tar"), whole)
    assert stored.keys() == fly.keys() and len(stored) == 3
    for key in stored:
        assert torch.equal(stored[key], fly[key])
        assert stored[key].abs().sum() > 0


def _keypoints_found_again(own: np.ndarray, moved: np.ndarray, margin: int, size: int) -> float:
    """Share of ``own`` keypoints at least ``margin`` px inside the image that ``moved`` also
    has (centre within 1 px, scale within 20%)."""
    y, x = own[:, 0], own[:, 1]
    inside = own[(y >= margin) & (y < size - margin) & (x >= margin) & (x < size - margin)]
    assert len(inside) >= 3
    found = [
        (
            (np.hypot(moved[:, 0] - fy, moved[:, 1] - fx) < 1.0)
            & (np.abs(np.log(moved[:, 2] / s)) < 0.2)
        ).any()
        for fy, fx, s, _ in inside
    ]
    return float(np.mean(found))


def test_training_crop_moves_the_stored_keypoints_into_the_crop(tmp_path, photo_arrays):
    """The loader's map of a crop is the stored keypoints moved into the crop; away from the
    crop's border they are the keypoints SIFT finds in the crop itself (and moving them 3 px
    wrong would find none)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, array in enumerate(photo_arrays[:3]):
        Image.fromarray(center_crop(resize_shorter_side(array, 80), 80)).save(folder / f"p{i}.png")
    write_shards(folder, tmp_path / "stored", size=80, features="sift", progress=False)
    sift = SparseSIFT()
    shards = sorted(str(p) for p in (tmp_path / "stored").glob("*.tar"))
    found, misplaced = [], []
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        full = decode_rgb(image_field(sample))
        out = SampleDecoder(TrainTransform(64, flip=False, seed=0), sift)(dict(sample))
        crop = out["image"]
        (top, left), *_ = [
            (y, x)
            for y in range(17)
            for x in range(17)
            if np.array_equal(full[y : y + 64, x : x + 64], crop)
        ]
        with np.load(io.BytesIO(sample["sift.npz"])) as stored:
            frames, descriptors = stored["frames"].copy(), stored["descriptors"]
        frames[:, 0] -= top
        frames[:, 1] -= left
        assert np.array_equal(out["features"].numpy(), sift_grid(frames, descriptors, 64, 64))
        own, _ = detect_sift(grey_255(crop))
        found.append(_keypoints_found_again(own, frames, 12, 64))
        wrong = frames.copy()
        wrong[:, 1] += 3
        misplaced.append(_keypoints_found_again(own, wrong, 12, 64))
    assert len(found) == 3
    assert np.mean(found) > 0.6 and max(misplaced) == 0, (found, misplaced)


def test_representation_and_batched_forward(photo):
    sift = build_representation("sift")
    assert sift.runs_in_loader and not sift.differentiable
    assert sift.output_shape((97, 64)) == (133, math.ceil(97 / 4), 16)
    images = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    out = sift(images.repeat(2, 1, 1, 1))
    assert out.shape == (2, 133, 24, 24) and torch.equal(out[0], out[1])
    assert torch.equal(out[0], torch.from_numpy(sift.map_of_image(photo)))
