"""Metrics of reconstruction quality: one implementation for training validation and evaluation.

* normalized reconstruction error (Dosovitskiy & Brox, Sect. 2.2, "Quantitative evaluation"):
  ``mean_i ||x_i - f(Phi(x_i))||_2 / N``, N the mean Euclidean distance over all pairs of test
  images; reconstructions are upsampled bilinearly to the input size first.
* structure error: the normalized error after moving each reconstruction's mean colour to
  its photo's; the difference to the normalized error is what a global colour shift explains.
* feature error (Mahendran & Vedaldi, IJCV Sect. 5.1): ``||Phi(x_hat) - Phi(x)|| / ||Phi(x)||``.
* colour cast: mean over images of ``|mean colour of x_hat - mean colour of x|``, per channel
  (0-1 scale). A representation without colour (HOG of grey images) leaves colour to the
  decoder's prior; the figure to beat is the cast of the best single constant colour for the
  set, the per-channel median of the images' mean colours.
* sharpness: the mean gradient magnitude of the reconstructions (clamped to [0, 1], at the
  images' size) over that of the originals, over a set: 1.0 is as sharp as the photos, an
  MSE decoder's mean-of-all-pre-images output is well below, noise goes above. A no-reference
  figure for what the adversarial loss changes (Dosovitskiy & Brox, NIPS 2016).
* PSNR and SSIM (torchmetrics), on reconstructions clamped to [0, 1], as image-quality
  figures other papers report.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from featinv.ops import match_size


def reconstruction_distances(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image Euclidean distance ``||x_i - x_hat_i||_2`` after matching sizes."""
    reconstructions = match_size(reconstructions.to(images.dtype), tuple(images.shape[-2:]))
    return (images - reconstructions).flatten(1).norm(dim=1)


def mean_pairwise_distance(images: torch.Tensor) -> torch.Tensor:
    """N: the mean Euclidean distance over all pairs ``i < j`` of a set of images."""
    if images.shape[0] < 2:
        raise ValueError("the normalizer needs at least 2 images (it averages over pairs)")
    return F.pdist(images.flatten(1).double()).mean()


def leave_one_out_means(images: torch.Tensor) -> torch.Tensor:
    """Each image's prediction by the mean of the *other* images of the set.

    The set's own mean image includes the photo it predicts, with weight 1/n, so it is closer
    to each photo than any prediction made without that photo: per image,
    ``x_i - mean_{j != i} x_j = n / (n - 1) * (x_i - mean_j x_j)``, and the own mean image's
    error is exactly ``(n - 1) / n`` of this one's.
    """
    n = images.shape[0]
    if n < 2:
        raise ValueError("a leave-one-out mean needs at least 2 images")
    return (images.sum(dim=0, keepdim=True) - images) / (n - 1)


def normalized_reconstruction_error(
    images: torch.Tensor,
    reconstructions: torch.Tensor,
    normalizer: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Per-image normalized error ``||x_i - x_hat_i|| / N``; ``.mean()`` is the paper's figure.

    Args:
        images: ``(n, 3, H, W)`` originals.
        reconstructions: ``(n, 3, h, w)``, upsampled to ``H x W`` if smaller.
        normalizer: N; computed from ``images`` when not given.
    """
    if normalizer is None:
        normalizer = mean_pairwise_distance(images)
    return reconstruction_distances(images, reconstructions).double() / normalizer


def colour_matched(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Reconstructions at the images' size with each one's mean colour moved to its image's
    (a per-image, per-channel shift)."""
    shown = match_size(reconstructions.to(images.dtype), tuple(images.shape[-2:]))
    shift = mean_colours(images) - mean_colours(shown)
    return shown + shift[..., None, None].to(shown.dtype)


def structure_error(
    images: torch.Tensor,
    reconstructions: torch.Tensor,
    normalizer: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Per-image normalized error after moving each reconstruction's mean colour to its
    image's: what remains once a global colour shift is forgiven. The normalized error minus
    this is the part a per-image colour and brightness shift explains (what grey,
    block-normalized features such as HOG cannot carry)."""
    return normalized_reconstruction_error(
        images, colour_matched(images, reconstructions), normalizer
    )


def feature_error(features_hat: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Per-image relative feature error ``||Phi(x_hat) - Phi(x)|| / ||Phi(x)||``."""
    diff = (features_hat - features).flatten(1).norm(dim=1)
    return diff / features.flatten(1).norm(dim=1).clamp_min(torch.finfo(features.dtype).tiny)


def mean_gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Per image, the mean over pixels of ``sqrt(sum_c dx_c^2 + dy_c^2)`` (forward differences)."""
    images = images.float()
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).sum(dim=1).sqrt().flatten(1).mean(dim=1)


def gradient_sums(
    images: torch.Tensor, reconstructions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed mean gradient magnitudes ``(of the reconstructions, of the images)``, the
    reconstructions clamped to [0, 1] and resized to the images' size: sharpness is their
    ratio, summed over as many batches as there are."""
    shown = match_size(reconstructions.float(), tuple(images.shape[-2:])).clamp(0, 1)
    return mean_gradient_magnitude(shown).sum(), mean_gradient_magnitude(images).sum()


def sharpness(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Mean gradient magnitude of the reconstructions over that of the images (1.0: as sharp)."""
    reconstructed, original = gradient_sums(images, reconstructions)
    return reconstructed / original.clamp_min(torch.finfo(torch.float32).tiny)


def psnr(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) of reconstructions clamped to [0, 1], over the batch."""
    shown = match_size(reconstructions.float(), tuple(images.shape[-2:])).clamp(0, 1)
    return peak_signal_noise_ratio(shown, images.float(), data_range=1.0)


def ssim(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity of reconstructions clamped to [0, 1] (Gaussian 11x11)."""
    shown = match_size(reconstructions.float(), tuple(images.shape[-2:])).clamp(0, 1)
    return structural_similarity_index_measure(shown, images.float(), data_range=1.0)


def mean_colours(images: torch.Tensor) -> torch.Tensor:
    """``(n, 3)``: each image's mean colour."""
    return images.float().mean(dim=(2, 3))


def colour_cast(colours: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-channel mean over images of ``|colour - reference colour|``, shape ``(3,)``."""
    return (colours - reference).abs().mean(dim=0)


def key_order(keys: list[str]) -> torch.Tensor:
    """A stable pseudo-random 63-bit rank per sample key (the same in every process)."""
    digests = [hashlib.blake2b(key.encode(), digest_size=8).digest() for key in keys]
    return torch.tensor([int.from_bytes(d, "big") >> 1 for d in digests], dtype=torch.long)


class SharpnessMetric(Metric):
    """Streaming sharpness (see ``sharpness``) over a set, reduced across DDP ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("reconstructed", "original"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, reconstructions: torch.Tensor) -> None:
        reconstructed, original = gradient_sums(images, reconstructions.detach())
        self.reconstructed += reconstructed.double()
        self.original += original.double()

    def compute(self) -> torch.Tensor:
        return self.reconstructed / self.original.clamp_min(torch.finfo(torch.float64).tiny)


class NormalizedErrorMetric(Metric):
    """Streaming normalized reconstruction error, reduced across DDP ranks by torchmetrics.

    Distances are summed as batches arrive. The normalizer N needs the images themselves, so
    at most ``max_normalizer_images`` are kept: when every validation image fits, N is exactly
    the paper's; otherwise it is estimated on a subset. With sample keys the subset is the
    images whose key hashes are smallest, so it is the same whether the set is split over one
    process or many (the multi-GPU error then equals the single-process one); without keys it
    is the first images each process sees.

    ``compute()`` also returns the error of the constant mean-image predictor on the kept
    images (an oracle: it knows the set's mean), that of ``reference_image`` when given (the
    training data's mean image: the honest constant baseline), and the colour casts of the
    reconstructions, of the best constant colour and of the reference image.
    """

    full_state_update = False

    def __init__(self, max_normalizer_images: int = 512) -> None:
        super().__init__()
        if max_normalizer_images < 2:
            raise ValueError("the normalizer needs at least 2 images (it averages over pairs)")
        self.max_normalizer_images = max_normalizer_images
        self.add_state("distance_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "structure_distance_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("kept", [], dist_reduce_fx="cat")
        self.add_state("kept_order", [], dist_reduce_fx="cat")
        self.add_state("image_colours", [], dist_reduce_fx="cat")
        self.add_state("reconstruction_colours", [], dist_reduce_fx="cat")

    def update(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        keys: list[str] | None = None,
    ) -> None:
        images = images.float()
        self.distance_sum += (
            reconstruction_distances(images, reconstructions.float()).double().sum()
        )
        matched = colour_matched(images, reconstructions.detach().float())
        self.structure_distance_sum += reconstruction_distances(images, matched).double().sum()
        if keys is not None:
            order = key_order(keys).to(images.device)
        else:
            order = self.count + torch.arange(images.shape[0], device=images.device)
        self.count += images.shape[0]
        self.image_colours.append(mean_colours(images))
        self.reconstruction_colours.append(mean_colours(reconstructions.detach()))
        self.kept.append(images.detach())
        self.kept_order.append(order)
        if sum(k.shape[0] for k in self.kept) > self.max_normalizer_images:
            kept, order = self._smallest(torch.cat(self.kept), torch.cat(self.kept_order))
            self.kept, self.kept_order = [kept], [order]

    def _smallest(
        self, images: torch.Tensor, order: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images of smallest order, sorted by it (a fixed order gives a fixed N)."""
        order, index = order.sort()
        index = index[: self.max_normalizer_images]
        return images[index], order[: self.max_normalizer_images]

    def compute(self, reference_image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The figures of the images seen so far (see the class docstring).

        Args:
            reference_image: ``(3, h, w)``: a constant prediction to score on the same images
                (resized to theirs), e.g. the training data's mean image.
        """

        def joined(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
            return state if isinstance(state, torch.Tensor) else torch.cat(state)

        kept, _ = self._smallest(joined(self.kept), joined(self.kept_order))
        normalizer = mean_pairwise_distance(kept)
        mean_image = kept.mean(dim=0, keepdim=True).expand_as(kept)
        colours = joined(self.image_colours)
        best_constant = colours.median(dim=0).values
        results = {
            "normalized_error": self.distance_sum / self.count.clamp_min(1) / normalizer,
            "structure_error": self.structure_distance_sum / self.count.clamp_min(1) / normalizer,
            "normalizer": normalizer,
            "mean_image_error": normalized_reconstruction_error(
                kept, mean_image, normalizer
            ).mean(),
            "colour_cast": colour_cast(joined(self.reconstruction_colours), colours).mean(),
            "constant_colour_cast": colour_cast(best_constant[None], colours).mean(),
        }
        if reference_image is not None:
            reference = reference_image.to(kept)[None]
            results["train_mean_image_error"] = normalized_reconstruction_error(
                kept, reference.expand(len(kept), -1, -1, -1), normalizer
            ).mean()
            results["train_mean_colour_cast"] = colour_cast(mean_colours(reference), colours).mean()
        return results
