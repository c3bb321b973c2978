"""HOG (31 and 27 channels), HOGb and LBP against VLFeat's own C library, on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featinv.data.images import resize_shorter_side
from featinv.data.transforms import center_crop
from featinv.ops import rgb_to_grey
from featinv.representations import HOG, LBP
from tests.vlfeat_reference import needs_vlfeat, vlfeat_hog, vlfeat_lbp

pytestmark = needs_vlfeat
SIZES = [(64, 64), (100, 100), (75, 130)]


def _photos(photo_arrays, height: int, width: int) -> torch.Tensor:
    crops = [
        center_crop(resize_shorter_side(a, max(height, width)), max(height, width))[:height, :width]
        for a in photo_arrays
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("bilinear", [False, True], ids=["HOG", "HOGb"])
def test_hog_is_vlfeats(photo_arrays, height, width, bilinear):
    images = _photos(photo_arrays, height, width)
    grey = rgb_to_grey(images)[:, 0].numpy()
    ours = HOG(bilinear_orientations=bilinear)(images).numpy()
    without_texture = HOG(bilinear_orientations=bilinear, texture=False)(images).numpy()
    # HOGb's acos of float32 values differs in the last bits between the two implementations
    tolerance = 1e-4 if bilinear else 1e-6
    for i, image in enumerate(grey):
        reference = vlfeat_hog(image, bilinear=bilinear)
        assert ours[i].shape == reference.shape
        assert np.abs(ours[i] - reference).max() < tolerance
        # Mahendran & Vedaldi's HOG: the 27 directed and undirected channels
        assert without_texture[i].shape[0] == 27
        assert np.abs(without_texture[i] - reference[:27]).max() < tolerance


def test_colour_hog_is_vlfeats(photo_arrays):
    """VLFeat's colour mode: per pixel, the channel with the largest gradient."""
    images = _photos(photo_arrays, 64, 80)
    ours = HOG(grayscale=False)(images).numpy()
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        assert np.abs(ours[i] - vlfeat_hog(image)).max() < 1e-6


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_lbp_is_vlfeats(photo_arrays, height, width):
    images = _photos(photo_arrays, height, width)
    grey = rgb_to_grey(images)[:, 0].numpy()
    ours = LBP()(images).numpy()
    for i, image in enumerate(grey):
        reference = vlfeat_lbp(image)
        assert ours[i].shape == reference.shape
        assert np.abs(ours[i] - reference).max() < 1e-6
