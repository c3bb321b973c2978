"""A plain NumPy transcription of ``docs/features.md`` (HOG), for parity tests only.

Written as directly as the spec reads -- nine projections scanned like VLFeat's loop, votes
added with ``np.add.at``, a loop over cells for the normalization -- so that it shares no trick
with the torch implementation it checks.
"""

from __future__ import annotations

import math

import numpy as np


def reference_hog(
    image: np.ndarray, cell_size: int = 8, num_orientations: int = 9, bilinear: bool = False
) -> np.ndarray:
    """HOG of one image ``(H, W)`` or ``(H, W, C)`` float32 -> ``(31, hogH, hogW)`` float64."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    height, width, channels = img.shape
    hog_w = (width + cell_size // 2) // cell_size
    hog_h = (height + cell_size // 2) // cell_size
    n = num_orientations
    ox = np.array([math.cos(o * math.pi / n) for o in range(n)], dtype=np.float32)
    oy = np.array([math.sin(o * math.pi / n) for o in range(n)], dtype=np.float32)

    # Step 2: gradients of pixels 1..W-2, 1..H-2; channel with the largest squared norm.
    gx_all = img[1:-1, 2:, :] - img[1:-1, :-2, :]
    gy_all = img[2:, 1:-1, :] - img[:-2, 1:-1, :]
    gx = np.zeros(gx_all.shape[:2], np.float32)
    gy = np.zeros(gx_all.shape[:2], np.float32)
    best = np.zeros(gx_all.shape[:2], np.float32)
    for c in range(channels):
        n2 = gx_all[..., c] * gx_all[..., c] + gy_all[..., c] * gy_all[..., c]
        take = n2 > best
        gx[take], gy[take], best[take] = gx_all[..., c][take], gy_all[..., c][take], n2[take]
    norm = np.sqrt(best).astype(np.float32)

    # Step 3: VLFeat's scan over k keeping the best and second-best |projection|.
    w0 = np.full(gx.shape, -1, np.float32)
    w1 = np.full(gx.shape, -1, np.float32)
    b0 = np.full(gx.shape, -1, np.int64)
    b1 = np.full(gx.shape, -1, np.int64)
    for k in range(n):
        score = (gx * ox[k] + gy * oy[k]).astype(np.float32)
        binidx = np.where(score < 0, k + n, k)
        score = np.abs(score)
        top = score > w0
        second = ~top & (score > w1)
        b1 = np.where(top, b0, np.where(second, binidx, b1))
        w1 = np.where(top, w0, np.where(second, score, w1))
        b0 = np.where(top, binidx, b0)
        w0 = np.where(top, score, w0)
    if bilinear:
        angle0 = np.arccos(np.minimum(w0 / np.maximum(norm, 1e-10), 1.0).astype(np.float32))
        ow1 = (angle0 / np.float32(math.pi / n)).astype(np.float32)
        votes = [(b0, 1 - ow1), (b1, ow1)]
    else:
        votes = [(b0, np.ones_like(norm))]

    # Step 4: bilinear spatial votes, outside votes dropped.
    hist = np.zeros((2 * n, hog_h, hog_w), np.float64)
    ys, xs = np.meshgrid(np.arange(1, height - 1), np.arange(1, width - 1), indexing="ij")
    hx = (xs + 0.5) / cell_size - 0.5
    hy = (ys + 0.5) / cell_size - 0.5
    bx, by = np.floor(hx).astype(int), np.floor(hy).astype(int)
    wx2, wy2 = hx - bx, hy - by
    wx1, wy1 = 1 - wx2, 1 - wy2
    for orient, ow in votes:
        for dx, dy, wx, wy in (
            (0, 0, wx1, wy1),
            (1, 0, wx2, wy1),
            (0, 1, wx1, wy2),
            (1, 1, wx2, wy2),
        ):
            cx, cy = bx + dx, by + dy
            ok = (cx >= 0) & (cx < hog_w) & (cy >= 0) & (cy < hog_h)
            np.add.at(hist, (orient[ok], cy[ok], cx[ok]), (norm * ow * wx * wy)[ok])

    # Steps 5-6: per cell, four block normalizations, truncation and the 31 outputs.
    undirected = hist[:n] + hist[n:]
    energy = (undirected**2).sum(0)
    out = np.zeros((3 * n + 4, hog_h, hog_w))
    for y in range(hog_h):
        for x in range(hog_w):
            ym, yp = max(y - 1, 0), min(y + 1, hog_h - 1)
            xm, xp = max(x - 1, 0), min(x + 1, hog_w - 1)
            blocks = [
                energy[ym, xm] + energy[ym, x] + energy[y, xm] + energy[y, x],
                energy[ym, x] + energy[ym, xp] + energy[y, x] + energy[y, xp],
                energy[y, xm] + energy[y, x] + energy[yp, xm] + energy[yp, x],
                energy[y, x] + energy[y, xp] + energy[yp, x] + energy[yp, xp],
            ]
            for i, blk in enumerate(blocks):
                f = 1.0 / math.sqrt(blk + 1e-4)
                out[: 2 * n, y, x] += 0.5 * np.minimum(0.2, f * hist[:, y, x])
                clamped = np.minimum(0.2, f * undirected[:, y, x])
                out[2 * n : 3 * n, y, x] += 0.5 * clamped
                out[3 * n + i, y, x] = (1 / math.sqrt(18.0)) * clamped.sum()
    return out
