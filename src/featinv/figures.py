"""PNG figures a person looks at: originals next to reconstructions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from featinv.ops import match_size

#: Smallest cell side in a figure, in pixels.
MIN_CELL = 112


def comparison_grid(
    columns: Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    padding: int = 2,
    captions: Sequence[Sequence[str]] | None = None,
) -> Image.Image:
    """One row per image, one column per tensor (originals first, then reconstructions).

    Every tensor is ``(n, 3, h, w)`` in [0, 1] (clamped here, for display only) and is resized
    to the first column's size. ``captions[row][column]``, if given, is written under a cell.
    """
    size = tuple(columns[0].shape[-2:])
    if min(size) < MIN_CELL:  # small images are enlarged for display, so titles fit too
        size = tuple(round(s * MIN_CELL / min(size)) for s in size)
    cols = [match_size(c.detach().float().cpu(), size).clamp(0, 1) for c in columns]
    rows, (height, width) = cols[0].shape[0], size
    header = 14 if titles else 0
    caption = 12 if captions else 0
    cell_h = height + caption + padding
    canvas = np.full(
        (header + rows * cell_h + padding, len(cols) * (width + padding) + padding, 3),
        255,
        dtype=np.uint8,
    )
    for j, column in enumerate(cols):
        pixels = (column.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for i in range(rows):
            top, left = header + padding + i * cell_h, padding + j * (width + padding)
            canvas[top : top + height, left : left + width] = pixels[i]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for j, title in enumerate(titles or []):
        draw.text((padding + j * (width + padding) + 2, 1), title, fill=(0, 0, 0))
    for i, row in enumerate(captions or []):
        for j, text in enumerate(row):
            top = header + padding + i * cell_h + height
            draw.text((padding + j * (width + padding) + 1, top), text, fill=(0, 0, 0))
    return image


def save_comparison_grid(
    path: str | Path,
    columns: Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Write ``comparison_grid`` as a PNG and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comparison_grid(columns, titles, captions=captions).save(path)
    return path


def save_layer_plot(
    path: str | Path,
    points: Sequence[tuple[str, float, str]],
    layers: Sequence[str],
    network: str = "AlexNet",
    references: Sequence[tuple[str, float]] = (),
) -> Path:
    """Normalized error against a network's layer, one line per kind (Dosovitskiy & Brox,
    Fig. 7).

    ``points`` are ``(layer, error, kind)`` with kind "learned", "autoencoder",
    "optimization" or "hybrid"; ``references`` are ``(label, error)`` drawn as horizontal
    dashed lines (the photos' own mean image: what a decoder that learned only a constant
    could at best reach).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    styles = (("learned", "o-"), ("autoencoder", "s--"), ("optimization", "^:"), ("hybrid", "d-."))
    for kind, style in styles:
        series = sorted((layers.index(layer), error) for layer, error, k in points if k == kind)
        if series:
            axes.plot([x for x, _ in series], [y for _, y in series], style, label=kind)
    for (label, error), dashes in zip(
        references, itertools.cycle(("--", (0, (1, 2)))), strict=False
    ):
        axes.axhline(error, color="grey", linestyle=dashes, linewidth=1, label=label)
    long_names = max((len(layer) for layer in layers), default=0) > 8
    axes.set_xticks(
        range(len(layers)),
        layers,
        rotation=30 if long_names else 0,
        ha="right" if long_names else "center",
    )
    axes.set_xlabel(f"{network} layer")
    axes.set_ylabel("normalized reconstruction error")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
