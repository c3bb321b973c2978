"""A plain NumPy transcription of ``docs/features.md`` (LBP), for parity tests only."""

from __future__ import annotations

import numpy as np

NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def reference_bits(grey: np.ndarray) -> np.ndarray:
    """Codes of pixels 1..H-2, 1..W-2 by direct 3x3 comparisons, one pixel at a time."""
    height, width = grey.shape
    codes = np.zeros((height - 2, width - 2), np.int64)
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            code = 0
            for k, (dy, dx) in enumerate(NEIGHBOURS):
                if grey[y + dy, x + dx] > grey[y, x]:
                    code |= 1 << k
            codes[y - 1, x - 1] = code
    return codes


def reference_class(code: int) -> int:
    """Step 3 by inspection of the bit string: uniform runs -> 7 i + (j - 1)."""
    if code in (0x00, 0xFF):
        return 56
    bits = [(code >> k) & 1 for k in range(8)]
    transitions = sum(bits[k] != bits[(k + 1) % 8] for k in range(8))
    if transitions != 2:
        return 57
    start = next(k for k in range(8) if bits[k] == 1 and bits[(k - 1) % 8] == 0)
    return 7 * start + (sum(bits) - 1)


def reference_lbp(grey: np.ndarray, cell_size: int = 16) -> np.ndarray:
    """``(58, H // cs, W // cs)`` histograms with a plain loop over pixels."""
    height, width = grey.shape
    grid_h, grid_w = height // cell_size, width // cell_size
    hist = np.zeros((58, grid_h, grid_w))
    codes = reference_bits(grey)
    for y in range(1, height - 1):
        hy = (y + 0.5) / cell_size - 0.5
        by = int(np.floor(hy))
        for x in range(1, width - 1):
            hx = (x + 0.5) / cell_size - 0.5
            bx = int(np.floor(hx))
            k = reference_class(int(codes[y - 1, x - 1]))
            for cy, wy in ((by, 1 - (hy - by)), (by + 1, hy - by)):
                for cx, wx in ((bx, 1 - (hx - bx)), (bx + 1, hx - bx)):
                    if 0 <= cy < grid_h and 0 <= cx < grid_w:
                        hist[k, cy, cx] += wx * wy
    return np.sqrt(hist) / (np.sqrt(hist.sum(0, keepdims=True)) + 1e-10)
