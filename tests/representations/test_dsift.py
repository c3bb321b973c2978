"""Dense SIFT: VLFeat's vl_dsift (fast mode) to 1e-4 on real photos, and exact gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featinv.data.images import resize_shorter_side
from featinv.data.transforms import center_crop
from featinv.ops import rgb_to_grey
from featinv.representations import DSIFT, build_representation
from featinv.representations.dsift import dsift_features
from tests.vlfeat_reference import needs_vlfeat, vlfeat_dsift


def _photos(photo_arrays, height: int, width: int) -> torch.Tensor:
    side = max(height, width)
    crops = [center_crop(resize_shorter_side(a, side), side)[:height, :width] for a in photo_arrays]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


@needs_vlfeat
@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 80), (128, 128), (41, 57)])
def test_dsift_is_vlfeats(photo_arrays, height, width):
    images = _photos(photo_arrays, height, width)
    ours = DSIFT()(images)
    grey = (rgb_to_grey(images) * 255)[:, 0].numpy()
    for i, image in enumerate(grey):
        reference = vlfeat_dsift(image, bin_size=8, step=8)  # (frames_y, frames_x, 128)
        assert ours[i].shape == (128, *reference.shape[:2])
        assert np.abs(ours[i].permute(1, 2, 0).numpy() - reference).max() < 1e-4


def test_gradients_are_exact_in_float64():
    torch.manual_seed(0)
    grey = (torch.rand(1, 1, 27, 28, dtype=torch.float64) * 255).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda g: dsift_features(g), (grey,), eps=1e-4, atol=1e-5)


def test_shape_layout_and_options():
    phi = build_representation("dsift")
    assert phi.differentiable and phi.baseline_defaults() == {"c": 20.0, "jitter": 1}
    assert phi.output_shape(64) == (128, 5, 5) and phi.output_shape((128, 96)) == (128, 13, 9)
    features = phi(torch.rand(2, 3, 64, 64))
    norms = features.norm(dim=1)
    assert features.shape == (2, 128, 5, 5) and torch.allclose(norms, torch.ones_like(norms))
    with pytest.raises(ValueError, match="at least 25x25"):
        phi(torch.rand(1, 3, 20, 40))


@pytest.mark.parametrize(("bin_size", "step"), [(8, 8), (6, 4), (4, 6), (5, 3)])
def test_pooling_where_frames_read_equals_pooling_everywhere(monkeypatch, bin_size, step):
    torch.manual_seed(0)
    grey = torch.rand(2, 1, 41, 37, dtype=torch.float64) * 255
    strided = dsift_features(grey, bin_size, step)
    # a gcd of 1 pools every pixel, as vl_imconvcoltri does, and reads the frames from there
    monkeypatch.setattr("featinv.representations.dsift.math.gcd", lambda a, b: 1)
    everywhere = dsift_features(grey, bin_size, step)
    torch.testing.assert_close(strided, everywhere, rtol=1e-12, atol=1e-12)
