"""Hybrid inversion: a learned decoder's reconstruction, refined by Algorithm 1.

The decoder (Dosovitskiy & Brox) is fast and gets layout and colour right; the optimization
(Mahendran & Vedaldi, Algorithm 1) matches the features. Started from the decoder's output
instead of noise, a few Algorithm 1 iterations bring the feature error down to the
optimization's while the image stays close to the decoder's.

Algorithm 1's constants were tuned for a start from noise. From a good start the step must be
small and the regularizers matter less, so the refinement uses eta = ``LR_FACTOR`` x eta_0
and C = ``C_FACTOR`` x the paper's C for the representation, for ``ITERATIONS`` iterations
(1/6 of the baseline's 300); how they were chosen, with the sweep and its command, is in
docs/baseline.md.
"""

from __future__ import annotations

from typing import Any

import torch

from featinv.baseline.optimization import BaselineOptions, InversionResult, OptimizationInverter
from featinv.representations.base import Representation

#: Iterations of the refinement (the baseline runs 300).
ITERATIONS = 50
#: eta = LR_FACTOR x Algorithm 1's eta_0.
LR_FACTOR = 0.005
#: C = C_FACTOR x the representation's C (M&V Sect. 5.1-5.2).
C_FACTOR = 5.0


def hybrid_inverter(
    representation: Representation, iterations: int = ITERATIONS, **options: Any
) -> OptimizationInverter:
    """Algorithm 1 with the refinement's step size and loss weight (``options`` override).

    Raises:
        ValueError: for a representation without gradients, naming the reason.
    """
    if not representation.differentiable:
        raise ValueError(
            f"{representation.label} has no gradient (it is not differentiable), so its "
            "reconstructions cannot be refined by optimization; use the decoder alone"
        )
    paper = BaselineOptions(**representation.baseline_defaults())
    defaults = {"lr": LR_FACTOR * paper.lr, "c": C_FACTOR * paper.c, "iterations": iterations}
    return OptimizationInverter(representation, **{**defaults, **options})


def refine(
    representation: Representation,
    start: torch.Tensor,
    images: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    iterations: int = ITERATIONS,
    seed: int = 0,
    progress: bool = False,
) -> InversionResult:
    """Refine ``start`` (``(B, 3, H, W)`` in [0, 1]) towards the features of ``images`` (or
    towards ``features``) with Algorithm 1, as hybrid inversion does."""
    inverter = hybrid_inverter(representation, iterations)
    size = tuple(start.shape[-2:])
    return inverter.invert(
        images,
        features=features,
        image_size=size if images is None else None,
        init=start,
        seed=seed,
        progress=progress,
    )
