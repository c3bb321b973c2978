"""The optimization baseline: Mahendran & Vedaldi's regularized pre-images (IJCV 2016)."""

from featinv.baseline.inverter import (
    BaselineOptions,
    InversionResult,
    OptimizationInverter,
)

__all__ = ["BaselineOptions", "InversionResult", "OptimizationInverter"]
