"""Decoding: every image mode becomes RGB uint8; undecodable data raises one clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from featinv.data.images import (
    CorruptImageError,
    _decode_jpeg_fast,
    decode_rgb,
    encode_image,
    scale_saturation,
)
from featinv.ops import rgb_to_grey


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_grey_is_replicated_to_three_channels():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = decode_rgb(_png(Image.fromarray(grey)))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out == grey[..., None]).all()


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent left half, opaque right half
    rgba[:, 2:, 3] = 255
    out = decode_rgb(_png(Image.fromarray(rgba, "RGBA")))
    assert (out[:, :2] == 255).all()
    assert (out[:, 2:] == [200, 0, 0]).all()


def test_palette_image_keeps_its_colours():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = [10, 200, 30]
    palette = Image.fromarray(rgb).quantize(colors=4)
    assert palette.mode == "P"
    assert (decode_rgb(_png(palette)) == rgb).all()


def test_sixteen_bit_grey_is_rescaled_not_clipped():
    values = np.array([[0, 32768, 65535, 65535]], dtype=np.uint16)
    encoded = _png(Image.fromarray(values))
    assert Image.open(io.BytesIO(encoded)).mode.startswith("I")  # a 16-bit grey PNG
    out = decode_rgb(encoded)
    assert out[0, :, 0].tolist() == [0, 128, 255, 255]


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_rgb(_png(cmyk, "JPEG"))
    assert out.shape == (8, 8, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"not an image at all", "cannot decode"), (None, "cannot decode")],
    ids=["zero-bytes", "garbage", "truncated-jpeg"],
)
def test_undecodable_data_raises_corrupt_image_error(data, message):
    if data is None:
        data = encode_image(np.full((64, 64, 3), 90, np.uint8))[:200]
    with pytest.raises(CorruptImageError, match=message):
        decode_rgb(data)


def test_png_encoding_is_lossless():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    assert (decode_rgb(encode_image(array, "png")) == array).all()
    with pytest.raises(ValueError, match="'jpg' or 'png'"):
        encode_image(array, "gif")


@pytest.mark.parametrize(("mode", "subsampling"), [("RGB", 0), ("RGB", 2), ("L", 0), ("CMYK", 0)])
def test_jpeg_fast_path_gives_pillows_pixels(photo_arrays, mode, subsampling):
    """libjpeg-turbo via simplejpeg (RGB, grey) or Pillow (CMYK): the same pixels either way."""
    image = Image.fromarray(photo_arrays[0][:123, :77]).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, subsampling=subsampling)
    data = buffer.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    decoded = decode_rgb(data)
    assert decoded.flags.writeable and np.array_equal(decoded, expected)
    assert (_decode_jpeg_fast(data) is None) == (mode == "CMYK")  # which path decoded it


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_photos_are_turned_upright_as_their_exif_orientation_says(photo_arrays, fmt):
    """A phone stores a portrait photo turned, with an EXIF orientation: every one of the
    eight decodes as Pillow's ``ImageOps.exif_transpose`` (what a viewer shows) does."""
    from PIL import ImageOps

    image = Image.fromarray(photo_arrays[0][:48, :80])
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, exif=exif.tobytes(), quality=95)
        data = buffer.getvalue()
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        decoded = decode_rgb(data)
        assert decoded.shape == ((80, 48, 3) if orientation >= 5 else (48, 80, 3))
        assert np.array_equal(decoded, expected), orientation
        assert decoded.flags.c_contiguous and decoded.flags.writeable


def test_truncated_jpeg_is_refused_not_padded(photo_arrays):
    data = encode_image(photo_arrays[0])
    with pytest.raises(CorruptImageError):
        decode_rgb(data[: len(data) // 2])


def test_saturation_scaling_keeps_the_grey_image_the_representations_see(photo_batch):
    torch.manual_seed(0)
    scaled = scale_saturation(photo_batch.clone(), 0.0, 1.5)
    grey_before, grey_after = rgb_to_grey(photo_batch), rgb_to_grey(scaled)
    unclamped = ((scaled > 0) & (scaled < 1)).all(dim=1, keepdim=True)
    assert torch.allclose(grey_after[unclamped], grey_before[unclamped], atol=1e-6)
    # factor 0 makes grey images; factor 1 changes nothing
    grey = scale_saturation(photo_batch.clone(), 0.0, 0.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    assert torch.allclose(scale_saturation(photo_batch.clone(), 1.0, 1.0), photo_batch, atol=1e-6)
