"""The discriminator: one logit per image for any feature shape, and scale-free features."""

from __future__ import annotations

import pytest
import torch

from featinv.losses.discriminator import Discriminator


@pytest.mark.parametrize(
    ("image_size", "feature_shape"),
    [(64, (31, 8, 8)), (227, (96, 55, 55)), (227, (4096,)), (32, (58, 4, 4))],
    ids=["hog-64", "conv1", "fc6", "lbp-32"],
)
def test_one_logit_per_image_for_any_feature_shape(image_size, feature_shape):
    torch.manual_seed(0)
    discriminator = Discriminator(image_size, feature_shape, width=8)
    logits = discriminator(torch.rand(3, 3, image_size, image_size), torch.rand(3, *feature_shape))
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    # a large early-layer map is pooled before the fully connected layer: it stays small
    assert sum(p.numel() for p in discriminator.parameters()) < 300_000


def test_features_count_by_their_pattern_not_their_scale():
    torch.manual_seed(0)
    discriminator = Discriminator(64, (31, 8, 8), width=8)
    images, features = torch.rand(2, 3, 64, 64), torch.rand(2, 31, 8, 8)
    scaled = discriminator(images, 1000 * features)  # a CNN layer's values, not HOG's
    assert torch.allclose(discriminator(images, features), scaled, atol=1e-5)
    other = discriminator(images, torch.rand(2, 31, 8, 8))
    assert not torch.allclose(discriminator(images, features), other)
