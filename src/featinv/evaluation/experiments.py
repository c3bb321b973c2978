"""``evaluate.py --experiment NAME``: the paper's analyses on a trained checkpoint (4.3-4.5).

Each experiment writes a PNG a person looks at and a JSON with its numbers next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from featinv.evaluation.analysis import (
    PERTURBATIONS,
    HistogramSampler,
    TruncatedGaussianSampler,
    imagenet_classes,
    interpolate,
    top5_variants,
)
from featinv.figures import save_comparison_grid
from featinv.inverter import Inverter
from featinv.metrics import (
    mean_pairwise_distance,
    normalized_reconstruction_error,
)
from featinv.ops import match_size
from featinv.reliability import write_json

EXPERIMENTS = ("perturb", "interpolate", "sample", "top5")


class ExperimentError(ValueError):
    """An experiment that does not apply to the given checkpoint."""


def _decode(inverter: Inverter, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return match_size(inverter.decode(features).float(), size).cpu()


def _write(out: Path, name: str, numbers: dict[str, Any]) -> dict[str, Any]:
    write_json(out / f"{name}.json", numbers)
    return numbers


def perturb(inverter: Inverter, images: torch.Tensor, out: Path, **_: Any) -> dict[str, Any]:
    """4.4: binarization and dropout of the features; errors next to the unperturbed one."""
    size = tuple(images.shape[-2:])
    features = inverter.features(images)
    normalizer = mean_pairwise_distance(images.cpu())
    columns = {"unperturbed": _decode(inverter, features, size)}
    for name, perturbation in PERTURBATIONS.items():
        columns[name] = _decode(inverter, perturbation(features), size)
    errors = {
        name: normalized_reconstruction_error(images.cpu(), recon, normalizer).mean().item()
        for name, recon in columns.items()
    }
    shown = min(8, len(images))
    save_comparison_grid(
        out / "perturb.png",
        [images[:shown].cpu()] + [c[:shown] for c in columns.values()],
        ["original", *columns],
    )
    return _write(out, "perturb", {"num_images": len(images), "normalized_error": errors})


def interpolate_pairs(
    inverter: Inverter, images: torch.Tensor, out: Path, steps: int = 8, pairs: int = 2, **_: Any
) -> dict[str, Any]:
    """4.5, Fig. 10: reconstructions along the line between the features of two images."""
    size = tuple(images.shape[-2:])
    features = inverter.features(images)
    written = []
    for k in range(min(pairs, len(images) // 2)):
        a, b = 2 * k, 2 * k + 1
        strip = _decode(inverter, interpolate(features[a], features[b], steps), size)
        path = out / f"interpolate_pair{k}.png"
        # one row: original a, the reconstructions along the line, original b
        row = [
            images[a : a + 1].cpu(),
            *(strip[i : i + 1] for i in range(steps)),
            images[b : b + 1].cpu(),
        ]
        titles = ["image A", *(f"t={i / (steps - 1):.2f}" for i in range(steps)), "image B"]
        save_comparison_grid(path, row, titles)
        written.append({"images": [a, b], "png": path.name})
    return _write(out, "interpolate", {"steps": steps, "pairs": written})


def sample(
    inverter: Inverter,
    images: torch.Tensor,
    out: Path,
    samples: int = 16,
    alpha: float = 2.0,
    seed: int = 0,
    **_: Any,
) -> dict[str, Any]:
    """4.5, Fig. 11: images from random feature vectors (histograms; one truncated Gaussian)."""
    size = tuple(images.shape[-2:])
    features = inverter.features(images).cpu()
    numbers: dict[str, Any] = {"fitted_on_images": len(images), "samples": samples, "alpha": alpha}
    samplers = {
        "histogram": (HistogramSampler().fit(features), alpha),
        "gaussian": (TruncatedGaussianSampler().fit(features), 1.0),
    }
    for name, (sampler, factor) in samplers.items():
        drawn = sampler.sample(samples, factor, generator=torch.Generator().manual_seed(seed))
        recon = _decode(inverter, drawn.to(inverter.device), size)
        columns = max(1, int(samples**0.5))
        rows = samples // columns
        grid = [recon[c * rows : (c + 1) * rows] for c in range(columns)]
        save_comparison_grid(out / f"sample_{name}.png", grid)
        numbers[name] = {
            "measured_sparsity": sampler.measured_sparsity,
            "sampled_sparsity": float((drawn == 0).float().mean()),
            "png": f"sample_{name}.png",
        }
    if len(images) < 100:
        numbers["note"] = f"fitted on {len(images)} images; the paper used 4096"
    return _write(out, "sample", numbers)


def top5(inverter: Inverter, images: torch.Tensor, out: Path, **_: Any) -> dict[str, Any]:
    """4.3, Fig. 8: FC8 -> all activations, the 5 largest only, all but the 5 largest."""
    phi = inverter.representation
    if not phi.class_scores:
        raise ExperimentError(
            f"top5 inverts class scores (AlexNet fc8); this checkpoint inverts {phi.label}"
        )
    size = tuple(images.shape[-2:])
    variants = top5_variants(inverter.features(images))
    recon = {name: _decode(inverter, f, size) for name, f in variants.items()}
    real = (inverter.hparams.get("representation_options") or {}).get("weights") != "random"
    numbers: dict[str, Any] = {"num_images": len(images), "weights": "real" if real else "random"}
    captions = None
    if real:
        names = imagenet_classes()
        predictions = {}
        for name, r in recon.items():
            probs = inverter.features(r.to(inverter.device)).softmax(dim=1).cpu()
            conf, index = probs.max(dim=1)
            predictions[name] = [
                {"class": names[i], "confidence": round(float(c), 4)}
                for i, c in zip(index.tolist(), conf, strict=True)
            ]
        numbers["predictions"] = predictions
        shown = min(8, len(images))
        captions = [
            [""]
            + [
                f"{predictions[n][i]['class'][:14]} {predictions[n][i]['confidence']:.2f}"
                for n in recon
            ]
            for i in range(shown)
        ]
    else:
        numbers["note"] = (
            "random AlexNet weights: class predictions would be meaningless, none shown"
        )
    shown = min(8, len(images))
    save_comparison_grid(
        out / "top5.png",
        [images[:shown].cpu()] + [r[:shown] for r in recon.values()],
        ["original", *recon],
        captions=captions,
    )
    return _write(out, "top5", numbers)


RUNNERS = {"perturb": perturb, "interpolate": interpolate_pairs, "sample": sample, "top5": top5}


def run_experiment(
    name: str, inverter: Inverter, images: torch.Tensor, out: Path, **options: Any
) -> dict[str, Any]:
    """Run one experiment; ``options``: ``steps``, ``pairs``, ``samples``, ``alpha``, ``seed``."""
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        return RUNNERS[name](inverter, images.to(inverter.device), out, **options)
