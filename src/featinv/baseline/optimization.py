"""Optimization-based inversion: the pre-images of Mahendran & Vedaldi (IJCV 2016, Sect. 3).

    x* = argmin_x  R_alpha(x) + R_TV^beta(x) + C * E_tau[ l(Phi(jitter(x; tau)), Phi0) ]   (1, 7)

solved with Algorithm 1 from random noise, in the paper's pixel convention (0-255, mean
subtracted, so B = 80 is a typical pixel norm), and returned in the project's (RGB in [0, 1]).

Batched: every image has its own objective, its own adaptive step sizes and its own random
stream (initial noise and jitter offsets from its own seed), so inverting images together
gives what inverting each alone gives, and a GPU does 64 images for nearly the price of one.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from featinv.baseline.optimizer import AdaGradMomentum
from featinv.baseline.regularizers import (
    ball_factor,
    natural_image_prior,
    normalized_loss,
    project_to_ball,
)
from featinv.metrics import feature_error
from featinv.representations.base import Representation

log = logging.getLogger(__name__)

#: The ImageNet mean RGB on the 0-255 scale: the paper's images have "null mean".
PIXEL_MEAN = (123.68, 116.779, 103.939)


@dataclass
class BaselineOptions:
    """The constants of Sect. 3.3 and Algorithm 1; ``None`` means "derived as in the paper".

    Attributes:
        c: weight of the loss (Sect. 5.1-5.2: 20 for HOG, 1-300 for AlexNet layers).
        alpha: exponent of the alpha-norm (6).
        beta: exponent of TV-beta (2).
        bound: B, the typical pixel norm (80).
        bound_plus: B+, the hard bound on pixel norms (2B).
        typical_gradient: V, the typical gradient norm (B / 6.5).
        jitter: T, the jitter range in pixels (1 = no jitter).
        iterations: T of Algorithm 1 (300).
        rho: momentum and forgetting factor (0.9).
        lr: eta_0 (0.01 B^2 / alpha).
        init_std: standard deviation of the initial noise per channel (B / 10).
    """

    c: float = 1.0
    alpha: float = 6.0
    beta: float = 2.0
    bound: float = 80.0
    bound_plus: float | None = None
    typical_gradient: float | None = None
    jitter: int = 1
    iterations: int = 300
    rho: float = 0.9
    lr: float | None = None
    init_std: float | None = None

    def __post_init__(self) -> None:
        self.bound_plus = 2 * self.bound if self.bound_plus is None else self.bound_plus
        if self.typical_gradient is None:
            self.typical_gradient = self.bound / 6.5
        self.lr = 0.01 * self.bound**2 / self.alpha if self.lr is None else self.lr
        self.init_std = self.bound / 10 if self.init_std is None else self.init_std
        if self.jitter < 1:
            raise ValueError(
                f"jitter is a range of pixels, at least 1 (no jitter), got {self.jitter}"
            )


@dataclass
class InversionResult:
    """What an inversion returns.

    Attributes:
        reconstructions: ``(B, 3, H, W)`` in the project convention (not clamped).
        feature_error: per image, ``||Phi(x*) - Phi0|| / ||Phi0||`` (IJCV Sect. 5.1).
        objective: ``(iterations, B)``, the objective (1) of each image at each iteration.
    """

    reconstructions: torch.Tensor
    feature_error: torch.Tensor
    objective: torch.Tensor


class OptimizationInverter:
    """Mahendran & Vedaldi's pre-image method for a differentiable representation.

    Args:
        representation: Phi (HOG, HOGb, an AlexNet layer, ...), used frozen in eval mode.
        **options: fields of ``BaselineOptions``; unset ones take the paper's values for this
            representation (its ``baseline_defaults()``), then the defaults of Sect. 3.3.

    Raises:
        ValueError: for a representation without gradients (LBP, SIFT), pointing to the
            learned decoder.
    """

    def __init__(self, representation: Representation, **options: Any) -> None:
        if not representation.differentiable:
            raise ValueError(
                f"{representation.name} is not differentiable, so gradient-based inversion "
                "cannot invert it; train a decoder instead (python train.py --config "
                f"configs/{representation.name}.yaml) and load it with featinv.Inverter"
            )
        self.representation = representation.eval().requires_grad_(False)
        self.options = BaselineOptions(**{**representation.baseline_defaults(), **options})

    @torch.enable_grad()  # the loop needs gradients even when the caller is in no_grad
    def invert(
        self,
        images: torch.Tensor | None = None,
        *,
        features: torch.Tensor | None = None,
        image_size: tuple[int, int] | None = None,
        mask: torch.Tensor | None = None,
        seed: int = 0,
        seeds: list[int] | None = None,
        init: torch.Tensor | None = None,
        progress: bool = True,
    ) -> InversionResult:
        """Reconstruct images from their features.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1]; their features are the targets.
            features: target features instead of images (then ``image_size`` is needed).
            image_size: ``(H, W)`` of the reconstructions when ``features`` are given.
            mask: binary mask over feature components (Eq. 3), broadcastable to the features.
            seed: image i uses seed ``seed + i`` unless ``seeds`` are given.
            seeds: one seed per image (initial noise and jitter offsets).
            init: ``(B, 3, H, W)`` RGB in [0, 1]: start from these images instead of noise
                (hybrid inversion: a decoder's reconstructions refined by Algorithm 1).
            progress: show a progress bar over iterations.

        Raises:
            ValueError: features or ``init`` of the wrong shape, naming the expected one.
        """
        opts = self.options
        given = images if images is not None else features
        if given is None:
            raise ValueError("give images, or features together with image_size")
        device = given.device
        phi = self.representation.to(device)
        if images is not None:
            images = images.to(device, torch.float32)
            image_size = tuple(images.shape[-2:])
            with torch.no_grad():
                target = phi(images)
        elif features is not None and image_size is not None:
            target = features.to(device, torch.float32)
            expected = phi.output_shape(image_size)
            if tuple(target.shape[1:]) != tuple(expected):
                raise ValueError(
                    f"expected target features of shape (batch, {', '.join(map(str, expected))}) "
                    f"for {image_size[0]}x{image_size[1]} images, got {tuple(target.shape)}"
                )
        else:
            raise ValueError("give images, or features together with image_size")
        batch = target.shape[0]
        seeds = list(seeds) if seeds is not None else [seed + i for i in range(batch)]
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for {batch} images")
        mask = None if mask is None else mask.to(device, target.dtype)

        height, width = image_size
        pad = opts.jitter - 1  # the variable is larger by T-1 so every jittered window is whole
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        if init is None:
            x = torch.stack(
                [torch.randn(3, height + pad, width + pad, generator=g) for g in generators]
            ).mul_(opts.init_std)
        else:
            x = _start_from(init, batch, image_size, pad, mean)
        x = project_to_ball(x.to(device), opts.bound_plus).requires_grad_(True)
        optimizer = AdaGradMomentum(x, opts.lr, opts.rho)
        mean_01 = mean / 255.0  # Phi reads (x + mean) / 255, computed as one pass
        history = []
        bar = tqdm(
            range(opts.iterations), desc=f"inverting {phi.name}", disable=not progress, leave=False
        )
        for _ in bar:
            window = x
            if pad:  # each image's offsets from its own stream
                offsets = [torch.randint(0, opts.jitter, (2,), generator=g) for g in generators]
                window = _windows(x, torch.stack(offsets), height, width)
            loss = normalized_loss(phi(torch.add(mean_01, window, alpha=1 / 255.0)), target, mask)
            # Algorithm 1 steps on the per-pixel gradient, i.e. that of H*W*E(x): Sect. 3.4 sets
            # eta_0 from "0 = B - eta * alpha / B", the gradient of R_alpha *without* Eq. 5's
            # 1/(HW); with it, steps would be HW times too small to move in 300 iterations.
            (gradient,) = torch.autograd.grad(loss.sum() * (opts.c * height * width), x)
            prior = natural_image_prior(
                x.detach(),
                opts.alpha,
                opts.bound,
                opts.beta,
                opts.typical_gradient,
                grad_into=gradient,
                grad_scale=height * width,
            )
            objective = prior + opts.c * loss.detach()
            optimizer.step(gradient)
            with torch.no_grad():
                x.mul_(ball_factor(x, opts.bound_plus))
            history.append(objective.detach())
            if progress:
                bar.set_postfix(objective=f"{float(objective.detach().mean()):.3f}")

        with torch.no_grad():
            top, left = pad // 2, pad // 2
            reconstructions = (x[:, :, top : top + height, left : left + width] + mean) / 255.0
            errors = feature_error(phi(reconstructions), target)
        return InversionResult(reconstructions.detach(), errors, torch.stack(history).cpu())

    def describe(self) -> dict[str, Any]:
        """The options in force, as plain values (for reports)."""
        return dataclasses.asdict(self.options)


def _windows(x: torch.Tensor, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Each image's ``height x width`` window of ``x`` at its ``(dy, dx)`` offset (jitter).

    One indexing operation, whose backward is one scatter into ``x``'s gradient (a window
    cut per image would have its backward write a whole zero-filled copy of ``x`` per image).
    """
    offsets = offsets.to(x.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=x.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=x.device)  # (B, W)
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
    # advanced indices around the channel slice put their dimensions first: (B, H, W, C)
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _start_from(
    init: torch.Tensor,
    batch: int,
    image_size: tuple[int, int],
    pad: int,
    mean: torch.Tensor,
) -> torch.Tensor:
    """The optimization variable for a given start: images in [0, 1] -> the paper's pixel
    convention, edge-padded by the jitter margin (placed as the final crop reads it)."""
    expected = (batch, 3, *image_size)
    if init.dim() != 4 or tuple(init.shape) != expected:
        raise ValueError(
            f"init must be images of shape {expected} (RGB in [0, 1], one per target), "
            f"got {tuple(init.shape)}"
        )
    x = init.detach().to(mean.device, torch.float32).clamp(0, 1) * 255.0 - mean
    top, left = pad // 2, pad // 2
    return F.pad(x, (left, pad - left, top, pad - top), mode="replicate") if pad else x
