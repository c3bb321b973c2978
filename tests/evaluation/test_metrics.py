"""The metrics: agreement with NumPy, the perfect and the constant predictors, streaming."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from featinv.metrics import (
    NormalizedErrorMetric,
    SharpnessMetric,
    feature_error,
    leave_one_out_means,
    mean_pairwise_distance,
    normalized_reconstruction_error,
    sharpness,
)


def test_agrees_with_a_direct_numpy_computation(photo_batch):
    torch.manual_seed(0)
    recon = (photo_batch + 0.1 * torch.randn_like(photo_batch)).clamp(0, 1)
    x, y = photo_batch.double().numpy(), recon.double().numpy()
    pairs = [np.linalg.norm(x[i] - x[j]) for i, j in itertools.combinations(range(len(x)), 2)]
    expected = np.mean([np.linalg.norm(x[i] - y[i]) for i in range(len(x))]) / np.mean(pairs)
    ours = normalized_reconstruction_error(photo_batch, recon).mean().item()
    assert ours == pytest.approx(expected, rel=1e-5)
    assert mean_pairwise_distance(photo_batch).item() == pytest.approx(np.mean(pairs), rel=1e-6)


def test_perfect_reconstruction_scores_zero_and_mean_image_about_point_seven(photo_batch):
    assert normalized_reconstruction_error(photo_batch, photo_batch).mean().item() == 0
    mean_image = photo_batch.mean(0, keepdim=True).expand_as(photo_batch)
    score = normalized_reconstruction_error(photo_batch, mean_image).mean().item()
    assert 0.6 < score < 0.8  # about 1/sqrt(2) for images far apart


def test_small_reconstructions_are_upsampled_first(photo_batch):
    half = torch.nn.functional.interpolate(photo_batch, scale_factor=0.5, mode="bilinear")
    err = normalized_reconstruction_error(photo_batch, half).mean().item()
    assert 0 < err < 0.3


def test_streaming_metric_equals_the_batch_computation(photo_batch):
    torch.manual_seed(1)
    recon = photo_batch.flip(0)
    metric = NormalizedErrorMetric()
    metric.update(photo_batch[:2], recon[:2])
    metric.update(photo_batch[2:], recon[2:])
    result = metric.compute()
    expected = normalized_reconstruction_error(photo_batch, recon).mean()
    assert result["normalized_error"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_capped_normalizer_uses_the_same_images_however_the_set_is_split(photo_batch):
    keys = [f"img{i}" for i in range(5)]
    recon = photo_batch.flip(0)
    whole, pieces = NormalizedErrorMetric(3), NormalizedErrorMetric(3)
    whole.update(photo_batch, recon, keys)
    for i in (4, 1, 3, 0, 2):  # another order and split, as another rank layout would give
        pieces.update(photo_batch[i : i + 1], recon[i : i + 1], keys[i : i + 1])
    a, b = whole.compute(), pieces.compute()
    assert a["normalizer"].item() == b["normalizer"].item()
    assert a["normalized_error"].item() == pytest.approx(b["normalized_error"].item(), rel=1e-12)
    # and the kept subset is a real subset: N differs from the one over all five images
    assert a["normalizer"].item() != pytest.approx(mean_pairwise_distance(photo_batch).item())


def test_feature_error_is_relative():
    phi = torch.tensor([[3.0, 4.0]])
    assert feature_error(phi, phi).item() == 0
    assert feature_error(torch.zeros_like(phi), phi).item() == pytest.approx(1.0)


def test_colour_casts_and_the_training_mean_baseline(photo_batch):
    metric = NormalizedErrorMetric()
    shift = torch.tensor([0.1, -0.2, 0.0]).view(1, 3, 1, 1)
    metric.update(photo_batch, photo_batch + shift)  # a pure colour cast
    grey = torch.full((3, 16, 16), 0.5)
    results = metric.compute(reference_image=grey)
    assert results["colour_cast"].item() == pytest.approx(0.1, abs=1e-6)  # mean of 0.1, 0.2, 0
    colours = photo_batch.mean(dim=(2, 3))
    median = colours.median(dim=0).values
    expected = (colours - median).abs().mean().item()
    assert results["constant_colour_cast"].item() == pytest.approx(expected, rel=1e-6)
    assert results["train_mean_colour_cast"].item() == pytest.approx(
        (colours - 0.5).abs().mean().item(), rel=1e-6
    )
    # the reference image is scored like a reconstruction (upsampled to the images' size)
    constant = grey[None].expand(len(photo_batch), -1, -1, -1)
    direct = normalized_reconstruction_error(photo_batch, constant).mean()
    assert results["train_mean_image_error"].item() == pytest.approx(direct.item(), rel=1e-6)
    # the set's own mean image is the best constant image: the grey one scores worse
    assert results["mean_image_error"] < results["train_mean_image_error"]
    without = NormalizedErrorMetric()
    without.update(photo_batch, photo_batch)
    assert "train_mean_image_error" not in without.compute()


def test_sharpness_is_one_for_the_photos_below_for_blur_above_for_noise(photo_batch):
    assert sharpness(photo_batch, photo_batch).item() == pytest.approx(1.0)
    blur = [
        sharpness(photo_batch, torch.nn.functional.avg_pool2d(photo_batch, k, 1, k // 2)).item()
        for k in (3, 5, 9)
    ]
    assert 1 > blur[0] > blur[1] > blur[2] > 0
    torch.manual_seed(0)
    noisy = photo_batch + 0.1 * torch.randn_like(photo_batch)
    assert sharpness(photo_batch, noisy).item() > 1.5
    # a half-size reconstruction is judged at the photos' size (upsampled bilinearly)
    half = torch.nn.functional.avg_pool2d(photo_batch, 2)
    assert 0 < sharpness(photo_batch, half).item() < 1


def test_sharpness_agrees_with_numpy_and_streams_over_batches(photo_batch):
    torch.manual_seed(0)
    recon = (photo_batch + 0.05 * torch.randn_like(photo_batch)).clamp(0, 1)

    def mean_gradient(x: np.ndarray) -> float:  # (n, 3, h, w): forward differences
        dx, dy = np.diff(x, axis=3)[:, :, :-1, :], np.diff(x, axis=2)[:, :, :, :-1]
        return np.sqrt((dx**2 + dy**2).sum(axis=1)).mean()

    expected = mean_gradient(recon.double().numpy()) / mean_gradient(photo_batch.double().numpy())
    assert sharpness(photo_batch, recon).item() == pytest.approx(expected, rel=1e-5)
    metric = SharpnessMetric()
    for first in range(0, len(photo_batch), 2):
        metric.update(photo_batch[first : first + 2], recon[first : first + 2])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)


def test_the_mean_of_the_other_images_is_the_own_mean_moved_away_by_n_over_n_minus_1():
    images = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    others = leave_one_out_means(images)
    for i in range(5):
        expected = torch.cat([images[:i], images[i + 1 :]]).mean(0)
        torch.testing.assert_close(others[i], expected)
    own = normalized_reconstruction_error(images, images.mean(0, keepdim=True).expand_as(images))
    scored = normalized_reconstruction_error(images, others)
    torch.testing.assert_close(own, scored * 4 / 5)
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_means(images[:1])
