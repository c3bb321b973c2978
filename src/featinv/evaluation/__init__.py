"""Scoring reconstructions: metrics, the methods ``evaluate.py`` compares, reports, analyses.

* ``metrics``: normalized reconstruction error, feature error, colour cast, sharpness,
  PSNR, SSIM, and the streaming metrics the trainer validates with;
* ``methods``: a trained decoder or the optimization baseline as one thing to score;
* ``reports``: ``report.json``, ``report.md`` and the PNG figures;
* ``experiments``: the paper's analyses on one checkpoint (Sect. 4.3-4.5);
* ``cli``: ``python evaluate.py`` / ``featinv-evaluate``.
"""

from featinv.evaluation.metrics import (
    NormalizedErrorMetric,
    SharpnessMetric,
    colour_cast,
    feature_error,
    match_size,
    mean_colours,
    mean_pairwise_distance,
    normalized_reconstruction_error,
    psnr,
    reconstruction_distances,
    sharpness,
    ssim,
)

__all__ = [
    "NormalizedErrorMetric",
    "SharpnessMetric",
    "colour_cast",
    "feature_error",
    "match_size",
    "mean_colours",
    "mean_pairwise_distance",
    "normalized_reconstruction_error",
    "psnr",
    "reconstruction_distances",
    "sharpness",
    "ssim",
]
