"""Procedural dead-leaves images: deterministic streams, natural statistics, honoured mixing."""

from __future__ import annotations

import numpy as np
import pytest

from featinv.data.bundled import TRAIN_PHOTOS, VAL_PHOTOS, photo_path
from featinv.data.images import decode_rgb, resize_shorter_side
from featinv.data.procedural import (
    DeadLeaves,
    SyntheticMix,
    TextureBank,
    radial_power_spectrum_slope,
)
from featinv.data.transforms import center_crop


@pytest.fixture(scope="module")
def bank(photo_arrays) -> TextureBank:
    return TextureBank.from_images(photo_arrays)


def _grey(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _stream(generator: DeadLeaves, seed: int, monkeypatch, rank=0, worker=0, count=4):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("WORKER", str(worker))
    monkeypatch.setenv("NUM_WORKERS", "2")
    mix = SyntheticMix(generator, fraction=1.0, seed=seed)
    stream = mix(iter(()))
    return [next(stream)["image"] for _ in range(count)]


def test_images_are_deterministic_per_seed_and_differ_across_workers_and_ranks(bank, monkeypatch):
    generator = DeadLeaves(64, bank)
    first = _stream(generator, 7, monkeypatch)
    assert all(a.shape == (64, 64, 3) and a.dtype == np.uint8 for a in first)
    again = _stream(generator, 7, monkeypatch)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # consecutive images of one stream differ, as do the streams of other seeds, workers, ranks
    assert not np.array_equal(first[0], first[1])
    for other in (
        _stream(generator, 8, monkeypatch),
        _stream(generator, 7, monkeypatch, worker=1),
        _stream(generator, 7, monkeypatch, rank=1),
    ):
        assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_power_spectrum_falls_like_that_of_the_bundled_photos(bank):
    """Natural images: log power against log frequency has a slope near -2."""
    rng = np.random.default_rng(0)
    generated = np.stack([DeadLeaves(64, bank)(rng) for _ in range(64)])
    photos = np.stack(
        [
            center_crop(resize_shorter_side(decode_rgb(photo_path(name)), 64), 64)
            for name in TRAIN_PHOTOS + VAL_PHOTOS
        ]
    )
    ours = radial_power_spectrum_slope(_grey(generated))
    natural = radial_power_spectrum_slope(_grey(photos))
    assert -3.2 < natural < -1.8  # the bundled photos at 64 px, for reference
    assert -3.2 < ours < -1.8
    assert abs(ours - natural) < 0.5
    # the measurement can tell: white noise is flat
    noise = rng.normal(size=(64, 64, 64))
    assert abs(radial_power_spectrum_slope(noise)) < 0.3


def test_colours_come_from_the_bank(bank):
    """Every image is painted with one photo's palette: its colours are the photos' colours."""
    grey_bank = TextureBank(
        palettes=np.full((1, 4, 3), 128, np.uint8), patches=np.full((2, 32, 32, 3), 128, np.uint8)
    )
    image = DeadLeaves(32, grey_bank, noise=0)(np.random.default_rng(0))
    # grey paint and a lighting gradient: the channels stay equal
    assert np.array_equal(image[..., 0], image[..., 1])
    assert np.array_equal(image[..., 1], image[..., 2])


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_the_mixing_fraction_is_honoured(bank, fraction, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    source = ({"image": None, "label": i, "key": f"photo{i}"} for i in range(10_000))
    mix = SyntheticMix(DeadLeaves(16, bank), fraction, seed=0)
    samples = [s for _, s in zip(range(400), mix(source), strict=False)]
    share = np.mean([s["key"].startswith("procedural") for s in samples])
    # 4 binomial standard deviations over 400 samples
    assert abs(share - fraction) <= 4 * np.sqrt(fraction * (1 - fraction) / 400)
    photos = [s["label"] for s in samples if s["key"].startswith("photo")]
    assert photos == list(range(len(photos)))  # the source is read in order, nothing lost


def test_impossible_requests_are_refused(bank):
    with pytest.raises(ValueError, match="8 to 1024 pixels wide, not 4"):
        DeadLeaves(4, bank)
    with pytest.raises(ValueError, match=r"synthetic_fraction must be in \[0, 1\]"):
        SyntheticMix(DeadLeaves(16, bank), 1.5)
    with pytest.raises(ValueError, match="at least one photo"):
        TextureBank.from_images([])


def _dense_owners(generator, radius, cy, cx, cos, sin, aspect, square):
    """Every shape tested on every pixel: the definition the bounding-square test must equal."""
    y, x = generator._y, generator._x
    dy, dx = y - cy[:, None, None], x - cx[:, None, None]
    u = (dx * cos[:, None, None] + dy * sin[:, None, None]) / radius[:, None, None]
    v = (dy * cos[:, None, None] - dx * sin[:, None, None]) / (radius * aspect)[:, None, None]
    inside = np.where(
        square[:, None, None],
        np.maximum(np.abs(u), np.abs(v)) <= 1,
        np.square(u) + np.square(v) <= 1,
    )
    return inside.argmax(axis=0), inside.any(axis=0)


@pytest.mark.parametrize("size", [8, 33, 64, 160])
def test_topmost_shapes_equal_testing_every_shape_on_every_pixel(bank, size):
    generator = DeadLeaves(size, bank)
    rng = np.random.default_rng(size)
    for _ in range(10):
        n = 64
        radius = generator.radii(rng, n).astype(np.float32)
        cy, cx = (rng.random((2, n)) * (size + 2 * radius) - radius).astype(np.float32)
        angle = rng.random(n).astype(np.float32) * np.pi
        aspect = rng.uniform(0.25, 1.0, n).astype(np.float32)
        square = rng.random(n) < 0.35
        shapes = (radius, cy, cx, np.cos(angle), np.sin(angle), aspect, square)
        owner, covered = generator._owners(*shapes)
        dense_owner, dense_covered = _dense_owners(generator, *shapes)
        np.testing.assert_array_equal(covered, dense_covered)
        np.testing.assert_array_equal(owner, dense_owner)
        assert 0 < covered.mean() <= 1
