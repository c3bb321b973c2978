"""Decoding images into the project convention, whatever mode the file is in.

Every path that reads an image (shard writer, shard reader, folder readers) goes through
``decode_rgb`` so that grey, RGBA, palette, CMYK and 16-bit images are converted the same way
everywhere, and anything Pillow cannot decode raises one exception type the callers count.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from PIL import Image, UnidentifiedImageError

from featinv.ops import GREY_WEIGHTS, rgb_to_grey

#: File extensions treated as images when scanning folders (compared lower-case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}
)


class CorruptImageError(ValueError):
    """An image file or sample that cannot be decoded; callers skip it and count it."""


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an ``(H, W, 3)`` uint8 array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) grey: rescale the full range to 8 bits, not clip it.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(array[:, :, None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = np.clip(np.round(array * (255.0 if array.max() <= 1.0 else 1.0)), 0, 255)
        return np.repeat(array.astype(np.uint8)[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent images on white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)  # one copy, writable


def _decode_jpeg_fast(data: bytes) -> np.ndarray | None:
    """Decode a plain RGB or grey JPEG with libjpeg-turbo through simplejpeg, else ``None``.

    Pixel-identical to Pillow's decoding (same library, accurate DCT and upsampling) and
    about 1.5x faster, without Pillow's intermediate copies: JPEG decoding is most of a
    loader worker's time. CMYK JPEGs, anything truncated or odd (``strict``) fall back to
    Pillow, which converts or rejects them with a message.
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        _, _, colour, _ = simplejpeg.decode_jpeg_header(data)
        if colour not in ("Gray", "YCbCr", "RGB"):
            return None
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None


def decode_rgb(data: bytes | str | Path) -> np.ndarray:
    """Decode image bytes or a file into an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        CorruptImageError: if the data is empty, truncated or not an image, naming the cause.
    """
    try:
        if isinstance(data, (str, Path)):
            data = Path(data).read_bytes()
        if not data:
            raise CorruptImageError("empty file (0 bytes)")
        array = _decode_jpeg_fast(data)
        if array is not None:
            return array
        with warnings.catch_warnings():
            # Pillow warns on some odd-but-readable files; decoding errors still raise.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                array = _to_rgb(image)
    except CorruptImageError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as error:
        raise CorruptImageError(f"cannot decode image: {error}") from error
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise CorruptImageError(f"decoded to an unusable array of shape {array.shape}")
    return array


def encode_image(array: np.ndarray, image_format: str = "jpg", quality: int = 95) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as JPEG (``"jpg"``) or lossless PNG (``"png"``)."""
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image format must be 'jpg' or 'png', got {image_format!r}")
    buffer = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    else:
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def resize_shorter_side(array: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 array so its shorter side is ``size`` (antialiased)."""
    height, width = array.shape[:2]
    scale = size / min(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) == (height, width):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(
        tensor, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def pixels_to_float(images: torch.Tensor) -> torch.Tensor:
    """Loader batches' uint8 pixels -> float32 in [0, 1]; float images pass unchanged.

    Loaders ship uint8 (4x less to copy between processes and to the GPU) and the conversion
    happens where the batch is used, on the device.
    """
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images


def scale_saturation(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Scale each image's chroma by a factor drawn uniformly from ``[low, high]``.

    Chroma is the difference from the grey image the representations see (``rgb_to_grey``),
    so that grey image is kept exactly, up to the clamp to [0, 1].
    """
    # the grey level whose three channels give back that grey image (the weights sum to 0.9999)
    luminance = rgb_to_grey(images) / sum(GREY_WEIGHTS)
    factor = torch.empty(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype)
    factor.uniform_(low, high)
    return (luminance + factor * (images - luminance)).clamp_(0, 1)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1], the project's image convention."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


def list_images(folder: str | Path) -> list[Path]:
    """All image files below ``folder``, sorted, so that every run sees the same order."""
    root = Path(folder)
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
