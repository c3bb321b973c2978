"""VLFeat's uniform LBP (``vl_lbp``) in torch: 58 channels, cell size 16, batched, on the device.

Follows ``docs/features.md`` (LBP, steps 1-6). Dosovitskiy & Brox (Sect. 2.1) invert
this descriptor "with cell size 16"; it is not differentiable, which is why gradient-based
inversion cannot handle it and the learned decoder can.
"""

from __future__ import annotations

from typing import Any

import torch

from featinv.ops import as_pair, rgb_to_grey
from featinv.representations.base import Representation, check_images, register
from featinv.representations.binning import bilinear_cell_histogram

#: Step 2: neighbour k as (dy, dx), bit k set iff the neighbour is strictly greater than the
#: centre: E, SE, S, SW, W, NW, N, NE (the order of VLFeat's code, not of its doc comment).
NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
NUM_CLASSES = 58


def uniform_mapping() -> torch.Tensor:
    """Step 3: the 256 -> 58 class table of VLFeat's uniform LBP."""
    table = torch.full((256,), 57, dtype=torch.long)  # the 198 non-uniform codes
    table[0x00] = table[0xFF] = 56
    for start in range(8):
        for ones in range(1, 8):
            run = ((1 << ones) - 1) << start
            table[(run | (run >> 8)) & 0xFF] = 7 * start + (ones - 1)
    return table


def lbp_codes(grey: torch.Tensor) -> torch.Tensor:
    """Step 2: the 8-bit code of every pixel ``1..H-2, 1..W-2`` of ``(B, 1, H, W)`` images."""
    height, width = grey.shape[-2:]
    image = grey[:, 0]
    centre = image[:, 1 : height - 1, 1 : width - 1]
    code = torch.zeros_like(centre, dtype=torch.uint8)
    for bit, (dy, dx) in enumerate(NEIGHBOURS):
        neighbour = image[:, 1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
        code |= (neighbour > centre).to(torch.uint8) << bit
    return code


@torch.no_grad()
def lbp_features(grey: torch.Tensor, cell_size: int = 16) -> torch.Tensor:
    """Uniform LBP of grey images ``(B, 1, H, W)`` -> ``(B, 58, H // cs, W // cs)``."""
    height, width = grey.shape[-2:]
    grid = (height // cell_size, width // cell_size)
    classes = uniform_mapping().to(grey.device)[lbp_codes(grey).long()]
    # Step 4: one vote of weight 1 per pixel, split bilinearly between four cells.
    hist = bilinear_cell_histogram([(classes, None)], NUM_CLASSES, (height, width), cell_size, grid)
    # Step 5: out_k = sqrt(h_k) / (sqrt(sum_k h_k) + 1e-10), per cell.
    return hist.sqrt() / (hist.sum(dim=1, keepdim=True).sqrt() + 1e-10)


@register
class LBP(Representation):
    """VLFeat uniform LBP of grey images: 58 channels, cell size 16 (Sect. 2.1).

    Args:
        cell_size: pixels per cell side (VLFeat default 16).
    """

    name = "lbp"
    differentiable = False

    def __init__(self, cell_size: int = 16) -> None:
        super().__init__()
        self.cell_size = cell_size

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        return self.cell_size  # at least one cell

    def output_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        height, width = as_pair(image_size)
        return (NUM_CLASSES, height // self.cell_size, width // self.cell_size)

    def config(self) -> dict[str, Any]:
        return {"cell_size": self.cell_size}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.min_image_size, "LBP")
        return lbp_features(rgb_to_grey(images).float(), self.cell_size)

    def extra_repr(self) -> str:
        return f"cell_size={self.cell_size}"
