"""The spatial decoder: the paper's up-convolution, sizes from the representation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featinv.decoders import FullyConnectedDecoder, SpatialDecoder, build_decoder
from featinv.decoders.blocks import upconv
from featinv.representations import HOG
from featinv.representations.input_normalization import IMAGENET_MEAN


def test_upconv_is_zero_insertion_then_5x5_convolution():
    """Sect. 2.2: each value goes to the top-left of a 2x2 block of zeros, then a 5x5 conv."""
    torch.manual_seed(0)
    layer = upconv(3, 4)
    x = torch.randn(2, 3, 6, 7)
    upsampled = torch.zeros(2, 3, 12, 14)
    upsampled[..., ::2, ::2] = x
    # A transposed convolution applies the spatially flipped, channel-transposed kernel.
    kernel = layer.weight.flip(-1, -2).transpose(0, 1)
    expected = F.conv2d(F.pad(upsampled, (2, 2, 2, 2)), kernel, layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_paper_scale_hog_contracts_to_one_sixty_fourth():
    decoder = build_decoder(HOG(), 256, width=8, max_width=16, min_width=4)
    strided = [
        m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)
    ]
    ups = [m for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(strided) == 3  # 32x32 HOG cells -> 4x4 = 256 / 64
    assert len(ups) == 6  # 4 -> 256
    out = decoder(torch.rand(1, 31, 32, 32))
    assert out.shape == (1, 3, 256, 256) and decoder.output_size == (256, 256)


def test_small_images_keep_a_spatial_bottleneck():
    decoder = build_decoder(HOG(), 64, width=8, min_bottleneck=4)
    strided = [
        m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)
    ]
    assert len(strided) == 1  # 8x8 -> 4x4, not 1x1
    assert decoder(torch.rand(2, 31, 8, 8)).shape == (2, 3, 64, 64)


def test_last_layer_is_linear_and_others_leaky():
    decoder = SpatialDecoder(31, 8, 64, width=8)
    assert isinstance(decoder.layers[-1], torch.nn.ConvTranspose2d)
    slopes = {m.negative_slope for m in decoder.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}


def test_wrong_feature_shape_names_the_expected_one():
    decoder = SpatialDecoder(31, 8, 64, width=8)
    with pytest.raises(ValueError, match=r"expected features of shape \(batch, 31, 8, 8\)"):
        decoder(torch.rand(2, 31, 16, 16))


@pytest.mark.parametrize("features", ["spatial", "vector"])
def test_a_new_decoder_predicts_a_faint_texture_around_natural_photos_mean_colour(features):
    torch.manual_seed(0)
    if features == "spatial":
        decoder, inputs = build_decoder(HOG(), 64, width=16), torch.rand(4, 31, 8, 8)
    else:
        decoder = FullyConnectedDecoder(10, fc_width=32, start_channels=16, num_upconvs=3)
        inputs = torch.rand(4, 10)
    output = decoder(inputs)
    colour = output.mean(dim=(2, 3))
    assert (colour - torch.tensor(IMAGENET_MEAN)).abs().max() < 0.05
    texture = output.std(dim=(2, 3))
    assert texture.min() > 0 and texture.max() < 0.1  # faint, but with gradients to follow
    F.mse_loss(output, torch.rand_like(output)).backward()
    without = [name for name, p in decoder.named_parameters() if not p.grad.abs().sum() > 0]
    assert not without  # the first step trains every layer
