"""The things ``evaluate.py`` compares: trained decoders, the optimization baseline, and
hybrid inversion (a decoder's reconstruction refined by the optimization).

Every method sees the same images, the same crops and the same normalizer N (per image size),
and is scored with the normalized reconstruction error (reconstructions upsampled bilinearly
to the input size first), the feature error, PSNR and SSIM. Timing covers the whole
inversion of a batch, features included, divided by the images, after a warm-up batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from featinv.baseline import OptimizationInverter, hybrid_inverter
from featinv.data.transforms import EvalTransform
from featinv.inverter import Inverter
from featinv.metrics import (
    feature_error,
    leave_one_out_means,
    mean_pairwise_distance,
    normalized_reconstruction_error,
    psnr,
    sharpness,
    ssim,
    structure_error,
)
from featinv.ops import match_size
from featinv.reliability import OptionError
from featinv.representations import Representation, build_representation, representation_class


@dataclass
class Method:
    """One thing to evaluate: a trained decoder or the baseline on a representation.

    Attributes:
        options: what the method was built with, for the report (the baseline's constants
            in force, a decoder's checkpoint path).
        train_mean_image: ``(3, S, S)``: the mean of a decoder's training images, when its
            checkpoint kept it: the constant the decoder has to beat, scored beside it.
    """

    name: str
    kind: Literal["learned", "optimization", "hybrid"]
    representation: Representation
    image_size: int
    invert: Callable[[torch.Tensor], torch.Tensor]
    autoencoder: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    train_mean_image: torch.Tensor | None = None
    results: dict[str, Any] = field(default_factory=dict)
    reconstructions: torch.Tensor | None = None


def learned_method(
    path: str | Path,
    device: torch.device,
    image_size: int | None = None,
    trust_checkpoint: bool = False,
    architecture: str | None = None,
) -> Method:
    """A trained decoder from its checkpoint (or exported file), evaluated at its own crop
    size by default; the file is read without executing anything unless trusted."""
    inverter = Inverter.load(
        path, device=device, trust_checkpoint=trust_checkpoint, architecture=architecture
    )
    if image_size is not None and image_size != inverter.image_size:
        raise OptionError(
            f"image size {image_size}: {path} decodes features of {inverter.image_size}-px "
            "images only; leave the image size out to evaluate it at its own"
        )
    return Method(
        name=f"{Path(path).parent.name}/{Path(path).stem}",
        kind="learned",
        representation=inverter.representation,
        image_size=image_size or inverter.image_size,
        invert=inverter.reconstruct,
        autoencoder=bool(inverter.hparams.get("train_encoder")),
        options={"checkpoint": str(path)},
        train_mean_image=inverter.train_mean_image(),
    )


def hybrid_method(
    checkpoint: str | Path,
    device: torch.device,
    iterations: int,
    seed: int,
    trust_checkpoint: bool = False,
    architecture: str | None = None,
) -> Method:
    """A checkpoint's reconstruction refined by Algorithm 1 (``featinv.baseline.hybrid``).

    Raises:
        ValueError: for a representation without gradients, naming the reason.
    """
    inverter = Inverter.load(
        checkpoint, device=device, trust_checkpoint=trust_checkpoint, architecture=architecture
    )
    refiner = hybrid_inverter(inverter.representation, iterations)  # also checks gradients

    def invert(images: torch.Tensor) -> torch.Tensor:
        return inverter.refine(images, iterations, seed=seed)

    return Method(
        name=f"hybrid/{Path(checkpoint).parent.name}/{Path(checkpoint).stem}",
        kind="hybrid",
        representation=inverter.representation,
        image_size=inverter.image_size,
        invert=invert,
        options={"checkpoint": str(checkpoint), **refiner.describe()},
    )


def representation_for_baseline(
    name: str,
    device: torch.device,
    layer: str | None = None,
    weights: str | None = None,
    architecture: str | None = None,
) -> Representation:
    """Build a representation to invert by optimization; ``weights``, ``layer`` and
    ``architecture`` go to the representations that take them (a network)."""
    cls = representation_class(name)
    options: dict[str, Any] = {}
    if cls.loads_weights:
        options["weights"] = weights
    if layer is not None:
        options["layer"] = layer
    if architecture is not None:
        options["architecture"] = architecture
    return build_representation(name, **options).to(device)


def baseline_methods(
    representations: Sequence[tuple[Representation, int]], iterations: int, seed: int
) -> tuple[list[Method], list[str]]:
    """The optimization baseline on each distinct (representation, size); notes for the
    representations it cannot invert (not differentiable)."""
    methods: list[Method] = []
    notes: list[str] = []
    seen = set()
    for phi, size in representations:
        key = (phi.name, tuple(sorted(phi.config().items(), key=str)), size)
        if key in seen:
            continue
        seen.add(key)
        if not phi.differentiable:
            notes.append(f"no optimization baseline for {phi.label}: it is not differentiable")
            continue
        baseline = OptimizationInverter(phi, iterations=iterations)

        def invert(images: torch.Tensor, b: OptimizationInverter = baseline) -> torch.Tensor:
            return b.invert(images, seed=seed, progress=False).reconstructions

        methods.append(
            Method(
                f"baseline/{phi.label}",
                "optimization",
                phi,
                size,
                invert,
                options=baseline.describe(),
            )
        )
    return methods, notes


def timed(
    invert: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, float]:
    """Reconstructions of all images in batches, and seconds per image after a warm-up batch."""
    invert(images[: min(batch_size, len(images))])  # warm-up: allocations, lazy init
    synchronize = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    outputs = []
    synchronize()
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        outputs.append(invert(images[first : first + batch_size]))
    synchronize()
    return torch.cat(outputs), (time.perf_counter() - start) / len(images)


def device_name(device: torch.device) -> str:
    """The device as a report names it: the GPU's model, or ``cpu``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def constant_errors(
    images: torch.Tensor, constant: torch.Tensor, normalizer: float
) -> dict[str, float]:
    """Normalized and structure error of one ``(3, h, w)`` image predicted for every photo
    (resized to theirs): the score of a decoder that learned nothing from the features."""
    predicted = match_size(constant.to(images)[None], tuple(images.shape[-2:]))
    return prediction_errors(images, predicted.expand_as(images), normalizer)


def prediction_errors(
    images: torch.Tensor, predicted: torch.Tensor, normalizer: float
) -> dict[str, float]:
    """Mean normalized and structure error of ``predicted``, one image per photo."""
    return {
        "normalized_error": normalized_reconstruction_error(images, predicted, normalizer)
        .mean()
        .item(),
        "structure_error": structure_error(images, predicted, normalizer).mean().item(),
    }


def score_methods(
    methods: Sequence[Method],
    photos: Sequence[np.ndarray],
    batch_size: int,
    device: torch.device,
) -> dict[int, dict[str, Any]]:
    """Score every method, filling its ``results`` and ``reconstructions``.

    Returns, per image size, the centrally cropped images, their normalizer N, the errors
    of their own mean image (a constant that knows the photos: an oracle) and those of each
    photo predicted by the mean image of the others.
    """
    groups: dict[int, dict[str, Any]] = {}
    for size in sorted({m.image_size for m in methods}):
        transform = EvalTransform(size)
        images = torch.stack([transform(a) for a in photos]).to(device)
        normalizer = mean_pairwise_distance(images).item()
        if not normalizer > 0:
            raise OptionError(
                f"the {len(images)} photos are identical at {size} px (their mean pairwise "
                "distance N is 0), so the normalized error is undefined: give photos that differ"
            )
        groups[size] = {
            "images": images,
            "normalizer": normalizer,
            "mean_image": constant_errors(images, images.mean(0), normalizer),
            "others_mean_image": prediction_errors(images, leave_one_out_means(images), normalizer),
        }
    for method in tqdm(methods, desc="evaluating", unit="method"):
        images = groups[method.image_size]["images"]
        with torch.no_grad():
            raw, seconds = timed(method.invert, images, batch_size)
            recon = match_size(raw.float(), tuple(images.shape[-2:]))
            errors = normalized_reconstruction_error(
                images, recon, groups[method.image_size]["normalizer"]
            )
            structure = structure_error(images, recon, groups[method.image_size]["normalizer"])
            phi = method.representation
            try:
                f_error = feature_error(phi(recon), phi(images)).mean().item()
            except ValueError:  # a representation that refuses the reconstruction's size
                f_error = None
            method.results = {
                "representation": phi.name,
                "layer": getattr(phi, "layer", None),
                "kind": method.kind,
                "autoencoder": method.autoencoder,
                "image_size": method.image_size,
                "normalized_error": errors.mean().item(),
                "normalized_error_std": errors.std().item() if len(errors) > 1 else 0.0,
                "structure_error": structure.mean().item(),
                "feature_error": f_error,
                "seconds_per_image": seconds,
                "sharpness": sharpness(images, recon).item(),
                "psnr": psnr(images, recon).item(),
                "ssim": ssim(images, recon).item(),
                "device": device_name(device),
                "options": method.options,
                "train_mean_image": None
                if method.train_mean_image is None
                else constant_errors(
                    images, method.train_mean_image, groups[method.image_size]["normalizer"]
                ),
            }
            method.reconstructions = recon.cpu()
    return groups


def build_methods(
    checkpoints: list[str],
    representations: list[str],
    baseline: bool,
    device: torch.device,
    image_size: int | None = None,
    layer: str | None = None,
    weights: str | None = None,
    architecture: str | None = None,
    baseline_iterations: int = 300,
    seed: int = 0,
    hybrid_iterations: int | None = None,
    trust_checkpoint: bool = False,
) -> tuple[list[Method], list[str]]:
    """Decoders from ``checkpoints``; with ``baseline``, the optimization baseline on their
    representations and on each name in ``representations``; with ``hybrid_iterations``,
    each checkpoint's reconstructions refined by that many Algorithm 1 iterations."""
    methods = [
        learned_method(path, device, image_size, trust_checkpoint, architecture)
        for path in checkpoints
    ]
    _name_apart(methods, checkpoints)
    notes: list[str] = []
    if hybrid_iterations is not None:
        if not checkpoints:
            raise OptionError("--hybrid refines a decoder's output: give --checkpoint PATH")
        for learned, path in zip(list(methods), checkpoints, strict=True):
            try:
                hybrid = hybrid_method(
                    path, device, hybrid_iterations, seed, trust_checkpoint, architecture
                )
            except ValueError as error:  # a representation without gradients
                raise OptionError(f"--hybrid: {error}") from None
            hybrid.name = f"hybrid/{learned.name}"
            methods.append(hybrid)
    if baseline:
        targets = [(m.representation, m.image_size) for m in methods]
        for name in representations:
            try:
                phi = representation_for_baseline(name, device, layer, weights, architecture)
            except ValueError as error:  # an unknown name, layer or network
                raise OptionError(f"--representation {name}: {error}") from None
            targets.append((phi, image_size or phi.default_image_size))
        if not targets:
            raise OptionError("--baseline needs a --checkpoint or a --representation to invert")
        found, notes = baseline_methods(targets, baseline_iterations, seed)
        methods += found
    elif representations:
        raise OptionError("--representation names what --baseline inverts: add --baseline")
    if not methods:
        raise OptionError("nothing to evaluate: give --checkpoint PATH and/or --baseline")
    sizes = sorted({m.image_size for m in methods})
    if len(sizes) > 1:
        notes.append(
            f"methods were trained at different image sizes ({', '.join(map(str, sizes))}): "
            "each is evaluated at its own size, with its own normalizer N"
        )
    return methods, notes


def _name_apart(methods: list[Method], paths: list[str]) -> None:
    """Name decoders by as many trailing path parts as it takes to tell them apart (runs
    of one representation in several folders all end in ``hog/best``)."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    for depth in range(2, max((len(p) for p in parts), default=0) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            break
    else:
        return
    for method, name in zip(methods, names, strict=True):
        method.name = name
