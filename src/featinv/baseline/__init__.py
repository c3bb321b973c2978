"""The optimization baseline: Mahendran & Vedaldi's regularized pre-images (IJCV 2016), and
hybrid inversion (a decoder's reconstruction refined by it)."""

from featinv.baseline.hybrid import hybrid_inverter, refine
from featinv.baseline.optimization import (
    BaselineOptions,
    InversionResult,
    OptimizationInverter,
)

__all__ = [
    "BaselineOptions",
    "InversionResult",
    "OptimizationInverter",
    "hybrid_inverter",
    "refine",
]
