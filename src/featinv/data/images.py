"""Decoding images into the project convention, whatever mode the file is in.

Every path that reads an image (shard writer, shard reader, folder readers, evaluation,
featinv-invert) goes through ``decode_rgb`` so that grey, RGBA, palette, CMYK and 16-bit images
are converted the same way everywhere, photos are turned upright as their EXIF orientation says
(as a viewer shows a phone's portrait photo), and anything Pillow cannot decode raises one
exception type the callers count and skip.

One budget bounds what any image may cost before it is decoded: its bytes
(``FEATINV_MAX_IMAGE_BYTES``, 256 MiB by default) and its pixels, read from the file's header
(``FEATINV_MAX_IMAGE_PIXELS``, Pillow's own bound of about 89.5 million by default), the same
for JPEGs decoded by libjpeg-turbo as for everything Pillow decodes. A resize that would
exceed the pixel budget (a 1 x 300 strip brought to a shorter side of 256) is refused the same
way, so such images are skipped and listed like corrupt ones.
"""

from __future__ import annotations

import io
import os
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


#: Defaults of the image budget (environment variables override them).
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS
#: The longest side libjpeg writes.
JPEG_MAX_SIDE = 65_500


class CorruptImageError(ValueError):
    """An image file or sample that cannot be decoded, or that is over the image budget;
    callers skip it and count it."""


def _budget(variable: str, default: int) -> int:
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise CorruptImageError(f"{variable} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise CorruptImageError(f"{variable} must be a positive integer, got {value}")
    return value


def max_image_pixels() -> int:
    """The pixel budget of one image (``FEATINV_MAX_IMAGE_PIXELS``)."""
    return _budget("FEATINV_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def max_image_bytes() -> int:
    """The byte budget of one image file or sample (``FEATINV_MAX_IMAGE_BYTES``)."""
    return _budget("FEATINV_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)


def check_pixels(height: int, width: int, what: str = "image") -> None:
    """Raise ``CorruptImageError`` when ``height x width`` is over the pixel budget."""
    budget = max_image_pixels()
    if height * width > budget:
        raise CorruptImageError(
            f"{what} is {width}x{height} pixels, over the budget of {budget} pixels "
            "(FEATINV_MAX_IMAGE_PIXELS raises it)"
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` read from an image's header without decoding its pixels, or
    ``None`` where the header does not say (Pillow then refuses what it cannot open)."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(height), int(width)
        except ValueError:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
                width, height = image.size
                return int(height), int(width)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def read_image_bytes(path: str | Path) -> bytes:
    """A file's bytes, refused (``CorruptImageError``) before reading when it is over the
    byte budget (a sparse or mislabelled file of gigabytes)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise CorruptImageError(f"cannot read {path}: {error}") from None
    budget = max_image_bytes()
    if size > budget:
        raise CorruptImageError(
            f"file of {size} bytes is over the budget of {budget} bytes per image "
            "(FEATINV_MAX_IMAGE_BYTES raises it)"
        )
    try:
        return path.read_bytes()
    except OSError as error:
        raise CorruptImageError(f"cannot read {path}: {error}") from None


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


#: The EXIF tag that says how a camera held the photo (1: as stored; 2-8: flips and turns).
EXIF_ORIENTATION = 0x0112


def _upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` as a viewer shows it, for EXIF ``orientation`` (the transposes of Pillow's
    ``ImageOps.exif_transpose``: 6 is a portrait photo stored turned 90 degrees left)."""
    if orientation in (5, 6, 7, 8):
        array = array.transpose(1, 0, 2)  # 5 is the transpose; 6, 7, 8 flip it
        array = {6: array[:, ::-1], 7: array[::-1, ::-1], 8: array[::-1]}.get(orientation, array)
    else:
        array = {2: array[:, ::-1], 3: array[::-1, ::-1], 4: array[::-1]}.get(orientation, array)
    return np.ascontiguousarray(array)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, 1 where it has none or a broken one."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block must not lose the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation of a JPEG, reading its header only (Pillow's lazy open) and only
    where it has an EXIF segment, which comes before the image data."""
    if data.find(b"Exif\x00\x00", 0, 2**17) < 0:
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return _exif_orientation(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1


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
        CorruptImageError: if the data is empty, truncated, not an image, or over the image
            budget (checked before decoding), naming the cause.
    """
    try:
        if isinstance(data, (str, Path)):
            data = read_image_bytes(data)
        if not data:
            raise CorruptImageError("empty file (0 bytes)")
        if len(data) > max_image_bytes():
            raise CorruptImageError(
                f"sample of {len(data)} bytes is over the budget of {max_image_bytes()} bytes "
                "per image (FEATINV_MAX_IMAGE_BYTES raises it)"
            )
        size = header_size(data)
        if size is not None:
            check_pixels(*size)
        array = _decode_jpeg_fast(data)
        if array is not None:
            return _upright(array, _jpeg_orientation(data))
        with warnings.catch_warnings():
            # Pillow warns on some odd-but-readable files; decoding errors still raise.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                check_pixels(image.size[1], image.size[0])
                image.load()  # before reading EXIF: a PNG may keep it after the pixels
                array = _upright(_to_rgb(image), _exif_orientation(image))
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
    height, width = array.shape[:2]
    if image_format == "jpg" and max(height, width) > JPEG_MAX_SIDE:
        raise CorruptImageError(
            f"a {width}x{height} image cannot be stored as JPEG (at most {JPEG_MAX_SIDE} pixels "
            "a side): its aspect ratio is too extreme for this shorter side"
        )
    try:
        if image_format == "jpg":
            Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        else:
            Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    except (OSError, ValueError) as error:
        raise CorruptImageError(f"cannot encode a {width}x{height} image: {error}") from None
    return buffer.getvalue()


def resize_shorter_side(array: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 array so its shorter side is ``size`` (antialiased).

    Raises:
        CorruptImageError: the result would be over the pixel budget (an extreme aspect
            ratio), so the image is skipped like a corrupt one.
    """
    height, width = array.shape[:2]
    scale = size / min(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    check_pixels(new_h, new_w, f"{width}x{height} image resized to a shorter side of {size}:")
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
