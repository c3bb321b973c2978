"""The analyses of Dosovitskiy & Brox (Sect. 4.3-4.5) as pure functions on feature tensors.

Every function takes a batch of feature vectors or maps ``(N, ...)`` and treats each row as
one feature vector; nothing here runs a network, so each definition is unit-tested alone.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import torch

# ----------------------------------------------------------------------------- 4.4 perturbations


def _rows(features: torch.Tensor) -> torch.Tensor:
    return features.reshape(features.shape[0], -1)


def binarize(features: torch.Tensor) -> torch.Tensor:
    """Keep the signs, set every magnitude to one value that keeps the Euclidean norm (4.4).

    "For all layers except FC8, feature vector entries are nonnegative, hence, binarization
    just sets all non-zero entries to a fixed positive value."
    """
    rows = _rows(features)
    nonzero = (rows != 0).sum(dim=1, keepdim=True).clamp_min(1)
    value = rows.norm(dim=1, keepdim=True) / nonzero.sqrt()
    return (rows.sign() * value).reshape(features.shape)


def _renormalize(perturbed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    norm = perturbed.norm(dim=1, keepdim=True)
    return perturbed * (original.norm(dim=1, keepdim=True) / norm.clamp_min(1e-12))


def dropout(
    features: torch.Tensor, fraction: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero exactly ``fraction`` of the entries of each vector, chosen at random, then rescale
    to the original Euclidean norm (4.4: "we found this normalization to work best")."""
    rows = _rows(features)
    count = round(fraction * rows.shape[1])
    scores = torch.rand(rows.shape, generator=generator).to(rows.device)
    dropped = scores.argsort(dim=1)[:, :count]
    kept = rows.scatter(1, dropped, 0.0)
    return _renormalize(kept, rows).reshape(features.shape)


def dropout_smallest(features: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """Zero the ``fraction`` of *non-zero* entries with the smallest magnitude in each vector,
    then rescale to the original norm (4.4, "50% least non-zero activations")."""
    rows = _rows(features)
    magnitude = rows.abs().masked_fill(rows == 0, float("inf"))
    order = magnitude.argsort(dim=1)
    out = rows.clone()
    for i, nonzero in enumerate((rows != 0).sum(dim=1).tolist()):
        out[i, order[i, : round(fraction * nonzero)]] = 0
    return _renormalize(out, rows).reshape(features.shape)


#: Name -> perturbation (Fig. 7's dashed lines): binarization; dropout of 50% random entries;
#: dropout of the 50% least non-zero entries; each dropout followed by binarization.
PERTURBATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "binarized": binarize,
    "dropout": lambda f: dropout(f, 0.5, torch.Generator().manual_seed(0)),
    "drop least": dropout_smallest,
    "dropout+bin": lambda f: binarize(dropout(f, 0.5, torch.Generator().manual_seed(0))),
    "drop least+bin": lambda f: binarize(dropout_smallest(f)),
}

# ----------------------------------------------------------------------------- 4.5 interpolation


def interpolate(first: torch.Tensor, second: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the straight line from ``first`` to ``second``, both ends included."""
    if steps < 2:
        raise ValueError(f"interpolation needs at least 2 steps (the two ends), got {steps}")
    t = torch.linspace(0, 1, steps, device=first.device, dtype=first.dtype)
    t = t.view(-1, *([1] * first.dim()))
    return (1 - t) * first.unsqueeze(0) + t * second.unsqueeze(0)


# ----------------------------------------------------------------------------- 4.5 random features


class HistogramSampler:
    """Independent per-dimension sampling from feature histograms (4.5, Fig. 11).

    "We simply computed a histogram of each feature over a set of [...] images and sampled
    from those. We ensured that the sparsity of the random samples is the same as that of the
    actual feature vectors. [...] Multiplying the feature vectors by a constant factor
    alpha = 2 increases the contrast." Each dimension is zero with its measured probability;
    otherwise a value is drawn from the histogram of its non-zero values (a bin by its count,
    then uniformly inside the bin).
    """

    def __init__(self, bins: int = 32) -> None:
        self.bins = bins

    def fit(self, features: torch.Tensor) -> HistogramSampler:
        rows = _rows(features).double()
        self.shape = features.shape[1:]
        nonzero = rows != 0
        self.sparsity = 1 - nonzero.double().mean(dim=0)  # per dimension
        big = torch.finfo(rows.dtype).max
        self.low = rows.masked_fill(~nonzero, big).min(dim=0).values
        self.high = rows.masked_fill(~nonzero, -big).max(dim=0).values
        self.low = torch.where(nonzero.any(dim=0), self.low, 0.0)
        self.high = torch.where(nonzero.any(dim=0), self.high, 0.0)
        width = (self.high - self.low).clamp_min(1e-12)
        index = ((rows - self.low) / width * self.bins).long().clamp(0, self.bins - 1)
        counts = torch.zeros(rows.shape[1], self.bins, dtype=torch.float64)
        counts.scatter_add_(1, index.t(), nonzero.t().double())
        self.counts = counts
        self.measured_sparsity = float(1 - nonzero.double().mean())
        return self

    def sample(
        self, count: int, alpha: float = 2.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        dims = self.counts.shape[0]
        weights = self.counts.clone()
        weights[weights.sum(dim=1) == 0, 0] = 1.0  # dimensions that were always zero
        bins = torch.multinomial(weights, count, replacement=True, generator=generator).t()
        width = (self.high - self.low) / self.bins
        inside = torch.rand(count, dims, generator=generator, dtype=torch.float64)
        values = self.low + (bins.double() + inside) * width
        active = torch.rand(count, dims, generator=generator, dtype=torch.float64) >= self.sparsity
        return (alpha * values * active).float().reshape(count, *self.shape)


class TruncatedGaussianSampler:
    """One shifted, truncated Gaussian for all dimensions (4.5, the "much simpler" sampler).

    ``x = max(0, N(mu, sigma^2))`` with sigma the spread of the non-zero values and mu chosen
    so that ``P(x = 0)`` is the measured sparsity. Features that take negative values (fc8)
    are not truncated: a plain Gaussian with their mean and spread.
    """

    def fit(self, features: torch.Tensor) -> TruncatedGaussianSampler:
        rows = _rows(features).double()
        self.shape = features.shape[1:]
        self.truncated = bool((rows >= 0).all())
        nonzero = rows[rows != 0]
        self.measured_sparsity = float((rows == 0).double().mean())
        if self.truncated:
            self.sigma = float(nonzero.std()) if nonzero.numel() > 1 else 1.0
            normal = torch.distributions.Normal(0.0, 1.0)
            p = min(max(self.measured_sparsity, 1e-6), 1 - 1e-6)
            self.mu = float(-self.sigma * normal.icdf(torch.tensor(p)))
        else:
            self.mu, self.sigma = float(rows.mean()), float(rows.std())
        return self

    def sample(
        self, count: int, alpha: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        values = self.mu + self.sigma * torch.randn(count, *self.shape, generator=generator)
        return alpha * (values.clamp_min(0) if self.truncated else values)


# ----------------------------------------------------------------------------- 4.3 top-5


def top5_variants(features: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
    """FC8 vectors as in Fig. 8: all activations, only the k largest, all but the k largest."""
    if features.dim() != 2:
        raise ValueError(
            f"top-5 works on feature vectors (batch, classes), got {tuple(features.shape)}"
        )
    top = features.topk(k, dim=1).indices
    only = torch.zeros_like(features).scatter(1, top, features.gather(1, top))
    without = features.scatter(1, top, 0.0)
    return {"all activations": features, f"top {k} only": only, f"all but top {k}": without}


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in the usual index order (bundled, from torchvision)."""
    text = resources.files("featinv.data").joinpath("imagenet_classes.txt").read_text()
    return text.splitlines()
