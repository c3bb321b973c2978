"""PNG figures a person looks at: originals next to reconstructions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from featinv.evaluation import match_size


def comparison_grid(
    columns: Sequence[torch.Tensor], titles: Sequence[str] | None = None, padding: int = 2
) -> Image.Image:
    """One row per image, one column per tensor (originals first, then reconstructions).

    Every tensor is ``(n, 3, h, w)`` in [0, 1] (clamped here, for display only) and is resized
    to the first column's size.
    """
    size = tuple(columns[0].shape[-2:])
    cols = [match_size(c.detach().float().cpu(), size).clamp(0, 1) for c in columns]
    rows, (height, width) = cols[0].shape[0], size
    header = 14 if titles else 0
    canvas = np.full(
        (header + rows * (height + padding) + padding, len(cols) * (width + padding) + padding, 3),
        255,
        dtype=np.uint8,
    )
    for j, column in enumerate(cols):
        pixels = (column.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for i in range(rows):
            top, left = header + padding + i * (height + padding), padding + j * (width + padding)
            canvas[top : top + height, left : left + width] = pixels[i]
    image = Image.fromarray(canvas)
    if titles:
        draw = ImageDraw.Draw(image)
        for j, title in enumerate(titles):
            draw.text((padding + j * (width + padding) + 2, 1), title, fill=(0, 0, 0))
    return image


def save_comparison_grid(
    path: str | Path, columns: Sequence[torch.Tensor], titles: Sequence[str] | None = None
) -> Path:
    """Write ``comparison_grid`` as a PNG and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comparison_grid(columns, titles).save(path)
    return path
