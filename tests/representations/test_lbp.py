"""LBP: bits, classes and histograms against a plain NumPy transcription of the spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featinv.data.images import resize_shorter_side
from featinv.ops import rgb_to_grey
from featinv.representations import LBP, build_representation
from featinv.representations.lbp import lbp_codes, uniform_mapping
from tests.representations.lbp_reference import reference_bits, reference_class, reference_lbp


def _grey(array: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    return rgb_to_grey(image)


@pytest.fixture(scope="module")
def small_photos(photo_arrays):
    """Real photos at a size a per-pixel Python loop can afford (and not multiples of 16)."""
    return [resize_shorter_side(a, 52)[:49, :52] for a in photo_arrays]


def test_bits_equal_direct_comparisons(small_photos):
    for array in small_photos:
        grey = _grey(array)
        assert np.array_equal(lbp_codes(grey)[0].numpy(), reference_bits(grey[0, 0].numpy()))


def test_class_table_matches_the_definition():
    table = uniform_mapping()
    assert [int(table[c]) for c in range(256)] == [reference_class(c) for c in range(256)]
    assert int((table == 57).sum()) == 198 and int((table == 56).sum()) == 2
    assert sorted(set(table.tolist())) == list(range(58))


def test_histograms_equal_a_plain_loop(small_photos):
    for array in small_photos:
        grey = _grey(array)
        ours = LBP()(torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255)[0].double()
        ref = reference_lbp(grey[0, 0].numpy().astype(np.float64))
        assert ours.shape == (58, 49 // 16, 52 // 16)
        assert np.abs(ours.numpy() - ref).max() <= 1e-6


def test_batched_and_shapes(photo_batch):
    lbp = build_representation("lbp")
    assert not lbp.differentiable and not lbp.runs_in_loader
    out = lbp(photo_batch)
    assert out.shape == (5, 58, 4, 4) == (5, *lbp.output_shape(64))
    torch.testing.assert_close(out[2:3], lbp(photo_batch[2:3]))
    # every cell is a unit vector after the sqrt normalization
    torch.testing.assert_close(out.square().sum(1), torch.ones(5, 4, 4), rtol=0, atol=1e-5)


def test_too_small_image_names_the_minimum():
    with pytest.raises(ValueError, match="at least 16x16"):
        LBP()(torch.rand(1, 3, 15, 40))
