"""Procedural training images with natural-image statistics: a textured dead-leaves model.

A dead-leaves image is a stack of occluding shapes whose sizes follow a power law
(``p(r) ~ r^-3``): the resulting images are scale invariant, with the ``1/f^2`` power spectrum,
sharp occlusion edges and flat regions of natural photographs (Lee, Mumford & Huang, 2001).
Used as training data they act as a regularity prior for image-restoration networks (Achddou,
Gousseau & Ladjal, *Synthetic images as a regularity prior for image restoration neural
networks*, SSVM 2021; Baradad et al., *Learning to See by Looking at Noise*, NeurIPS 2021).

For inversion they teach what the few bundled photos cannot: many edges at every orientation
and contrast whose sign says which side is brighter, the cue from which a HOG decoder must
recover absolute brightness (Dosovitskiy & Brox, Sect. 4.1). Colours and textures are taken
from real photos (a ``TextureBank``), one photo's palette per image so that colours co-occur
as they do in a scene; then come blur, a smooth lighting gradient and sensor noise.

Everything is NumPy, vectorized over the shapes of an image, and runs in the loader workers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import webdataset as wds

from featinv.data.images import resize_shorter_side

#: Sizes the generator draws images at: below 8 pixels there is no HOG cell to speak of, and
#: above 1024 one image would take long enough to starve the training step.
MIN_SIZE, MAX_SIZE = 8, 1024


@dataclass(frozen=True)
class TextureBank:
    """What procedural images are painted with, sampled from real photos.

    Attributes:
        palettes: ``(photos, colours, 3)`` uint8 pixel colours, one palette per photo (sampled
            from the photo shrunk to a 64-pixel side, so colours are of regions, not noise).
        patches: ``(patches, side, side, 3)`` uint8 texture patches from the same photos.
    """

    palettes: np.ndarray
    patches: np.ndarray

    @classmethod
    def from_images(
        cls,
        images: Iterable[np.ndarray],
        colours_per_image: int = 256,
        patches_per_image: int = 16,
        patch_size: int = 32,
        seed: int = 0,
    ) -> TextureBank:
        """Sample palettes and patches from ``(H, W, 3)`` uint8 photos, deterministically."""
        rng = np.random.default_rng(seed)
        palettes, patches = [], []
        for image in images:
            small = resize_shorter_side(image, 64).reshape(-1, 3)
            palettes.append(small[rng.integers(0, len(small), colours_per_image)])
            # patches at the scale the decoder sees: from the photo at twice the patch size
            texture = resize_shorter_side(image, 2 * patch_size * 2)
            height, width = texture.shape[:2]
            for _ in range(patches_per_image):
                top = int(rng.integers(0, height - patch_size + 1))
                left = int(rng.integers(0, width - patch_size + 1))
                patches.append(texture[top : top + patch_size, left : left + patch_size])
        if not palettes:
            raise ValueError("a texture bank needs at least one photo")
        return cls(np.stack(palettes), np.stack(patches))


class DeadLeaves:
    """Textured dead-leaves images of ``size x size`` pixels, RGB uint8.

    Args:
        size: image side in pixels.
        bank: colours and textures to paint with.
        exponent: the size law ``p(r) ~ r^-exponent`` (3: scale invariance).
        min_radius: smallest shape radius, as a fraction of ``size``.
        max_radius: largest shape radius, as a fraction of ``size``.
        max_shapes: shapes drawn per image; what they leave uncovered shows a texture patch.
        texture_probability: chance that a shape is textured (otherwise flat or a gradient).
        blur: largest Gaussian blur sigma, in pixels (each image draws one in ``[0, blur]``).
        noise: largest sensor noise sigma, on the 0-255 scale.
    """

    def __init__(
        self,
        size: int,
        bank: TextureBank,
        exponent: float = 3.0,
        min_radius: float = 0.06,
        max_radius: float = 0.7,
        max_shapes: int = 128,
        texture_probability: float = 0.5,
        blur: float = 1.0,
        noise: float = 3.0,
    ) -> None:
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(
                f"procedural images can be {MIN_SIZE} to {MAX_SIZE} pixels wide, not {size}"
            )
        if not 0 < min_radius < max_radius:
            raise ValueError(f"need 0 < min_radius < max_radius, got {min_radius}, {max_radius}")
        self.size = size
        self.bank = bank
        self.exponent = exponent
        self.min_radius = min_radius * size
        self.max_radius = max_radius * size
        self.max_shapes = max_shapes
        self.texture_probability = texture_probability
        self.blur = blur
        self.noise = noise
        self._patch_means = bank.patches.reshape(len(bank.patches), -1, 3).mean(
            axis=1, dtype=np.float32
        )
        coords = np.arange(size, dtype=np.float32) + 0.5
        self._y = coords[None, :, None]
        self._x = coords[None, None, :]

    def radii(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Radii drawn from the truncated power law by inverting its distribution function."""
        k = 1.0 - self.exponent
        lo, hi = self.min_radius**k, self.max_radius**k
        return (lo + rng.random(count) * (hi - lo)) ** (1.0 / k)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """One image; all randomness comes from ``rng``."""
        n, size = self.max_shapes, self.size
        # Shapes in the order they fall: the first one lies on top (dead leaves).
        radius = self.radii(rng, n).astype(np.float32)
        cy, cx = (rng.random((2, n)) * (size + 2 * radius) - radius).astype(np.float32)
        angle = rng.random(n).astype(np.float32) * math.pi
        aspect = rng.uniform(0.25, 1.0, n).astype(np.float32)
        square = rng.random(n) < 0.35  # rotated rectangles beside ellipses: straight edges
        cos, sin = np.cos(angle), np.sin(angle)
        owner, covered = self._owners(radius, cy, cx, cos, sin, aspect, square)
        # position across the owning shape (u of the shape's own frame)
        along = (
            (self._x[0] - cx[owner]) * cos[owner] + (self._y[0] - cy[owner]) * sin[owner]
        ) / radius[owner]

        # One photo's palette for the whole image: colours that belong to one scene.
        palette = self.bank.palettes[rng.integers(len(self.bank.palettes))].astype(np.float32)
        colour = palette[rng.integers(0, len(palette), n)]
        shaded = rng.random(n) < 0.25  # a linear gradient to a second colour across the shape
        colour_b = np.where(shaded[:, None], palette[rng.integers(0, len(palette), n)], colour)
        t = np.clip((along + 1) / 2, 0, 1)[..., None]
        image = colour[owner] * (1 - t) + colour_b[owner] * t

        # Texture: each textured shape shows its own patch, shifted to its zero mean and tiled.
        patches = self.bank.patches
        side = patches.shape[1]
        textured = rng.random(n) < self.texture_probability
        which = rng.integers(0, len(patches), n)
        gain = rng.uniform(0.5, 1.5, n).astype(np.float32)
        ys, xs = np.indices((size, size))
        texture = patches[which[owner], ys % side, xs % side].astype(np.float32)
        texture -= self._patch_means[which][owner]
        image += np.where(textured[owner], gain[owner], 0)[..., None] * texture

        # What no shape covers is background: a texture patch, tiled.
        background = patches[rng.integers(len(patches))][ys % side, xs % side]
        image = np.where(covered[..., None], image, background.astype(np.float32))
        return self._finish(image, rng)

    def _owners(
        self,
        radius: np.ndarray,
        cy: np.ndarray,
        cx: np.ndarray,
        cos: np.ndarray,
        sin: np.ndarray,
        aspect: np.ndarray,
        square: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The topmost shape over each pixel (0 where none) and where any shape lies.

        Each shape is tested only on the pixels of its bounding box: with sizes drawn from
        the power law most shapes are small, so this tests a small fraction of the pixels a
        test of every shape on every pixel would, with the same arithmetic on each pixel.
        """
        size, n = self.size, len(radius)
        # Half-extents along x and y of the shape with half-axes a (along the angle) and b: a
        # rotated rectangle's a|cos| + b|sin|, a rotated ellipse's sqrt((a cos)^2 + (b sin)^2),
        # in float64, rounded up, plus a pixel for the float32 test below.
        a, b = radius.astype(np.float64), (radius * aspect).astype(np.float64)
        abs_cos, abs_sin = np.abs(cos).astype(np.float64), np.abs(sin).astype(np.float64)
        half_x = np.where(square, a * abs_cos + b * abs_sin, np.hypot(a * abs_cos, b * abs_sin))
        half_y = np.where(square, a * abs_sin + b * abs_cos, np.hypot(a * abs_sin, b * abs_cos))
        reach_x = np.ceil(half_x).astype(np.int64) + 1
        reach_y = np.ceil(half_y).astype(np.int64) + 1
        y0 = np.clip(np.floor(cy).astype(np.int64) - reach_y, 0, size)
        y1 = np.clip(np.floor(cy).astype(np.int64) + reach_y + 1, 0, size)
        x0 = np.clip(np.floor(cx).astype(np.int64) - reach_x, 0, size)
        x1 = np.clip(np.floor(cx).astype(np.int64) + reach_x + 1, 0, size)
        heights, widths = y1 - y0, x1 - x0
        counts = heights * widths
        shape = np.repeat(np.arange(n), counts)
        local = np.arange(len(shape)) - np.repeat(np.cumsum(counts) - counts, counts)
        row = y0[shape] + local // np.maximum(widths, 1)[shape]
        col = x0[shape] + local % np.maximum(widths, 1)[shape]
        dy, dx = self._y[0, row, 0] - cy[shape], self._x[0, 0, col] - cx[shape]
        u = (dx * cos[shape] + dy * sin[shape]) / radius[shape]
        v = (dy * cos[shape] - dx * sin[shape]) / (radius * aspect)[shape]
        inside = np.where(
            square[shape],
            np.maximum(np.abs(u), np.abs(v)) <= 1,
            np.square(u) + np.square(v) <= 1,
        )
        top = np.full(size * size, n)
        np.minimum.at(top, (row * size + col)[inside], shape[inside])
        covered = top < n
        return np.where(covered, top, 0).reshape(size, size), covered.reshape(size, size)

    def _finish(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Optics and sensor: blur, a smooth lighting gradient, noise, 8-bit quantization."""
        sigma = rng.uniform(0, self.blur)
        if sigma > 0.3:
            image = _gaussian_blur(image, sigma)
        size = self.size
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(angle) * (self._x[0] / size - 0.5)) + (
            math.sin(angle) * (self._y[0] / size - 0.5)
        )
        image = image * (1 + rng.uniform(-0.6, 0.6) * ramp)[..., None]
        image += rng.normal(0, rng.uniform(0, self.noise), image.shape).astype(np.float32)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an ``(H, W, C)`` float image, edges reflected."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    for axis in (0, 1):
        padded = np.pad(
            image, [(radius, radius) if a == axis else (0, 0) for a in range(3)], mode="reflect"
        )
        length = image.shape[axis]
        image = sum(
            w * np.take(padded, range(i, i + length), axis=axis) for i, w in enumerate(taps)
        )
    return image


def radial_power_spectrum_slope(images: np.ndarray, low: float = 0.05, high: float = 0.4) -> float:
    """Slope of log power against log frequency, radially averaged over ``(N, H, W)`` grey images.

    Natural images are close to -2 (power ~ 1/f^2; van der Schaaf & van Hateren, 1996). The
    fit uses frequencies between ``low`` and ``high`` cycles per pixel, clear of the DC term
    and of the aliasing and quantization near Nyquist. A Hann window suppresses the edges.
    """
    height, width = images.shape[1:]
    window = np.outer(np.hanning(height), np.hanning(width))
    grey = images - images.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(grey * window)) ** 2).mean(axis=0)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    edges = np.geomspace(low, high, 16)
    centres, means = [], []
    for lo, hi in itertools.pairwise(edges):
        ring = (radius >= lo) & (radius < hi)
        if ring.any():
            centres.append(math.sqrt(lo * hi))
            means.append(power[ring].mean())
    slope, _ = np.polyfit(np.log(centres), np.log(means), 1)
    return float(slope)


class SyntheticMix:
    """A pipeline stage that replaces a ``fraction`` of a sample stream by procedural images.

    Called on an iterator of decoded samples (``{"image", "label", "key"}``), it yields each
    sample or, with probability ``fraction``, a generated image instead (label -1, key
    ``procedural-<rank>-<worker>-<n>``). With ``fraction`` 1 the source is never read. The
    random stream is seeded with ``(seed, rank, worker)``: a run is reproducible, and no two
    DDP ranks or loader workers generate the same images.

    Args:
        generator: makes one ``(H, W, 3)`` uint8 image from a ``numpy`` generator.
        fraction: share of procedural samples, in ``[0, 1]``.
        seed: base seed (``None``: fresh entropy every run).
        to_sample: turns a generated image into a sample like the source's (e.g. adds the
            features of a representation computed in the loader); default: image, label, key.
    """

    def __init__(
        self,
        generator: DeadLeaves,
        fraction: float,
        seed: int | None = None,
        to_sample: Callable[[np.ndarray, str], dict[str, Any]] | None = None,
    ) -> None:
        check_fraction(fraction)
        self.generator = generator
        self.fraction = fraction
        self.seed = seed
        self.to_sample = to_sample or (lambda image, key: {"image": image, "label": -1, "key": key})

    def __call__(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        entropy = self.seed if self.seed is not None else np.random.SeedSequence().entropy
        # the trailing 1 keeps this stream apart from the crops' (seed, rank, worker)
        rng = np.random.default_rng([entropy, rank, worker, 1])
        made = 0
        while True:
            if rng.random() < self.fraction:
                yield self.to_sample(self.generator(rng), f"procedural-{rank}-{worker}-{made}")
                made += 1
                continue
            try:
                yield next(samples)
            except StopIteration:
                return


def check_fraction(fraction: float) -> None:
    """Refuse a mixing fraction outside ``[0, 1]`` with a message that names the option."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(
            f"data.synthetic_fraction must be in [0, 1] (the share of procedural images in "
            f"each batch), got {fraction}"
        )
