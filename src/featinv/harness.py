"""``python evaluate.py``: learned decoders and the optimization baseline on the same images.

Every method sees the same images, the same crops and the same normalizer N (per image size),
and is scored with ``featinv.evaluation``'s normalized reconstruction error (reconstructions
upsampled bilinearly to the input size first) and feature error. Timing covers the whole
inversion of a batch, features included, divided by the images, after a warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from tqdm.auto import tqdm

from featinv.baseline import OptimizationInverter
from featinv.data.bundled import bundled_shards
from featinv.data.images import CorruptImageError, decode_rgb, list_images, to_tensor
from featinv.data.shards import expand_shards
from featinv.data.transforms import EvalTransform
from featinv.evaluation import (
    feature_error,
    match_size,
    mean_pairwise_distance,
    normalized_reconstruction_error,
)
from featinv.experiments import EXPERIMENTS, ExperimentError, run_experiment
from featinv.figures import save_comparison_grid, save_layer_plot
from featinv.inverter import Inverter, NotAFeatinvCheckpointError
from featinv.representations import Representation, build_representation
from featinv.representations.alexnet import LAYERS

log = logging.getLogger(__name__)


class EvaluationError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


@dataclass
class Method:
    """One thing to evaluate: a trained decoder or the baseline on a representation."""

    name: str
    kind: str  # "learned" | "optimization"
    representation: Representation
    image_size: int
    invert: Callable[[torch.Tensor], torch.Tensor]
    autoencoder: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    reconstructions: torch.Tensor | None = None


def load_photos(
    images: str | None, shards: str | None, limit: int, notes: list[str]
) -> list[np.ndarray]:
    """Up to ``limit`` decoded photos from a folder, shards, or the bundled validation set."""
    arrays: list[np.ndarray] = []
    skipped = 0
    if images is not None:
        files = list_images(images) if Path(images).is_dir() else []
        if not files:
            raise EvaluationError(f"no images found in {images}")
        for path in files:
            if len(arrays) == limit:
                break
            try:
                arrays.append(decode_rgb(path))
            except CorruptImageError as error:
                skipped += 1
                log.warning("skipping %s: %s", path, error)
        source = images
    else:
        import webdataset as wds

        pattern = shards if shards is not None else bundled_shards()["val"]
        try:
            urls = expand_shards(pattern)
        except FileNotFoundError as error:
            raise EvaluationError(str(error)) from error
        for sample in wds.WebDataset(
            urls, shardshuffle=False, nodesplitter=None, empty_check=False
        ):
            if len(arrays) == limit:
                break
            data = next((sample[k] for k in ("jpg", "jpeg", "png") if k in sample), b"")
            try:
                arrays.append(decode_rgb(data))
            except CorruptImageError:
                skipped += 1
        source = pattern if shards is not None else "the bundled validation photos"
    if skipped:
        notes.append(f"skipped {skipped} undecodable image(s) in {source}")
    if len(arrays) < 2:
        raise EvaluationError(f"need at least 2 decodable images in {source}, found {len(arrays)}")
    if len(arrays) < limit:
        notes.append(f"asked for {limit} images, {source} has {len(arrays)}: using {len(arrays)}")
    return arrays


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


def build_methods(args: argparse.Namespace, device: torch.device) -> tuple[list[Method], list[str]]:
    """Decoders from ``--checkpoint``s and baselines from ``--baseline`` / ``--representation``."""
    methods: list[Method] = []
    notes: list[str] = []
    for path in args.checkpoint or []:
        try:
            inverter = Inverter.from_checkpoint(path, device=device)
        except (FileNotFoundError, NotAFeatinvCheckpointError) as error:
            raise EvaluationError(str(error)) from error
        size = args.image_size or inverter.image_size
        name = Path(path).parent.name + "/" + Path(path).stem
        autoencoder = bool(inverter.hparams.get("train_encoder"))
        methods.append(
            Method(
                name, "learned", inverter.representation, size, inverter.reconstruct, autoencoder
            )
        )
    representations = [(m.representation, m.image_size) for m in methods]
    for name in args.representation or []:
        layer_options = {"weights": args.alexnet_weights} if name == "alexnet" else {}
        phi = build_representation(
            name, **layer_options, **({"layer": args.layer} if args.layer else {})
        )
        representations.append((phi.to(device), args.image_size or 64))
    if args.baseline:
        if not representations:
            raise EvaluationError("--baseline needs a --checkpoint or a --representation to invert")
        seen = set()
        for phi, size in representations:
            key = (phi.name, tuple(sorted(phi.config().items(), key=str)), size)
            if key in seen:
                continue
            seen.add(key)
            if not phi.differentiable:
                notes.append(f"no optimization baseline for {phi.name}: it is not differentiable")
                continue
            baseline = OptimizationInverter(phi, iterations=args.baseline_iterations)
            label = phi.name if phi.name != "alexnet" else f"alexnet-{phi.layer}"

            def invert(images: torch.Tensor, b: OptimizationInverter = baseline) -> torch.Tensor:
                return b.invert(images, seed=args.seed, progress=False).reconstructions

            methods.append(Method(f"baseline/{label}", "optimization", phi, size, invert))
    if not methods:
        raise EvaluationError("nothing to evaluate: give --checkpoint PATH and/or --baseline")
    sizes = sorted({m.image_size for m in methods})
    if len(sizes) > 1:
        listed = ", ".join(map(str, sizes))
        notes.append(
            f"methods were trained at different image sizes ({listed}): each is evaluated at "
            "its own size, with its own normalizer N"
        )
    return methods, notes


def evaluate(
    methods: list[Method], photos: list[np.ndarray], args: argparse.Namespace, device: torch.device
) -> dict[int, dict[str, Any]]:
    """Score every method; returns, per image size, the images and the normalizer."""
    groups: dict[int, dict[str, Any]] = {}
    for size in sorted({m.image_size for m in methods}):
        transform = EvalTransform(size)
        images = torch.stack([to_tensor(transform.crop(a)[0]) for a in photos]).to(device)
        groups[size] = {"images": images, "normalizer": mean_pairwise_distance(images).item()}
    for method in tqdm(methods, desc="evaluating", unit="method"):
        group = groups[method.image_size]
        images = group["images"]
        with torch.no_grad():
            raw, seconds = timed(method.invert, images, args.batch_size)
            recon = match_size(raw.float(), tuple(images.shape[-2:]))
            errors = normalized_reconstruction_error(images, recon, group["normalizer"])
            try:
                f_error = (
                    feature_error(method.representation(recon), method.representation(images))
                    .mean()
                    .item()
                )
            except ValueError:
                f_error = None
            shown = recon.clamp(0, 1)
            method.results = {
                "representation": method.representation.name,
                "layer": getattr(method.representation, "layer", None),
                "kind": method.kind,
                "autoencoder": method.autoencoder,
                "image_size": method.image_size,
                "normalized_error": errors.mean().item(),
                "normalized_error_std": errors.std().item() if len(errors) > 1 else 0.0,
                "feature_error": f_error,
                "seconds_per_image": seconds,
                "psnr": peak_signal_noise_ratio(shown, images, data_range=1.0).item(),
                "ssim": structural_similarity_index_measure(shown, images, data_range=1.0).item(),
                "device": str(device)
                if device.type != "cuda"
                else torch.cuda.get_device_name(device),
            }
            method.reconstructions = recon.cpu()
    return groups


def write_reports(
    methods: list[Method],
    groups: dict[int, dict[str, Any]],
    notes: list[str],
    out: Path,
    num_images: int,
) -> dict[str, Any]:
    """report.json, report.md, grid.png and (several AlexNet layers) layers.png."""
    out.mkdir(parents=True, exist_ok=True)
    first = min(groups)
    report = {
        "num_images": num_images,
        "image_size": first,
        "normalizer": groups[first]["normalizer"],
        "normalizers": {str(s): g["normalizer"] for s, g in groups.items()},
        "methods": {m.name: m.results for m in methods},
        "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# featinv evaluation: {num_images} images",
        "",
        "| method | kind | representation | layer | size | normalized error | feature error "
        "| PSNR | SSIM | s / image | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        r = m.results
        fe = "n/a" if r["feature_error"] is None else f"{r['feature_error']:.3f}"
        kind = r["kind"] + (" (autoencoder)" if r["autoencoder"] else "")
        error = f"{r['normalized_error']:.3f} +- {r['normalized_error_std']:.3f}"
        lines.append(
            f"| {m.name} | {kind} | {r['representation']} | {r['layer'] or ''} | {r['image_size']} "
            f"| {error} | {fe} | {r['psnr']:.2f} | {r['ssim']:.3f} "
            f"| {r['seconds_per_image']:.2e} | {r['device']} |"
        )
    lines += [
        "",
        "Normalizer N (mean distance between image pairs): "
        + ", ".join(f"{g['normalizer']:.2f} at {s} px" for s, g in groups.items()),
    ]
    lines += [f"- {note}" for note in notes]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    shown = min(8, num_images)
    for size, group in groups.items():
        members = [m for m in methods if m.image_size == size]
        grid = out / ("grid.png" if size == first else f"grid_{size}.png")
        save_comparison_grid(
            grid,
            [group["images"][:shown].cpu()] + [m.reconstructions[:shown] for m in members],
            ["original"] + [m.name for m in members],
        )
    layered = [m for m in methods if m.results["layer"] in LAYERS]
    if len({m.results["layer"] for m in layered}) > 1:
        save_layer_plot(
            out / "layers.png",
            [
                (
                    m.results["layer"],
                    m.results["normalized_error"],
                    "autoencoder" if m.autoencoder else m.kind,
                )
                for m in layered
            ],
            LAYERS,
        )
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate trained decoders and the optimization baseline on the same images.",
    )
    parser.add_argument("--checkpoint", action="append", help="a featinv checkpoint (repeatable)")
    parser.add_argument(
        "--baseline", action="store_true", help="also run the optimization baseline"
    )
    parser.add_argument("--representation", action="append", help="baseline on this representation")
    parser.add_argument("--layer", help="AlexNet layer for --representation alexnet")
    parser.add_argument(
        "--alexnet-weights", default=None, help="AlexNet weights for --representation"
    )
    parser.add_argument("--baseline-iterations", type=int, default=300, help="Algorithm 1's T")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", help="a folder of photos")
    source.add_argument("--shards", help="a shard pattern (default: the bundled validation photos)")
    parser.add_argument(
        "--num-images", type=int, default=100, help="images to use (the papers: 100)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="default: each checkpoint's own"
    )
    parser.add_argument("--out", default="evaluation", help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the baseline's initial noise")
    analysis = parser.add_argument_group("the paper's analyses (Sect. 4.3-4.5), on one checkpoint")
    analysis.add_argument("--experiment", choices=EXPERIMENTS, help="run one analysis instead")
    analysis.add_argument("--steps", type=int, default=8, help="interpolate: points per pair")
    analysis.add_argument("--pairs", type=int, default=2, help="interpolate: image pairs")
    analysis.add_argument("--samples", type=int, default=16, help="sample: random vectors")
    analysis.add_argument("--alpha", type=float, default=2.0, help="sample: contrast factor")
    return parser.parse_args(argv)


def run_analysis(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """``--experiment NAME``: one of the paper's analyses on one checkpoint."""
    if not args.checkpoint or len(args.checkpoint) != 1:
        raise EvaluationError(f"--experiment {args.experiment} needs exactly one --checkpoint")
    try:
        inverter = Inverter.from_checkpoint(args.checkpoint[0], device=device)
    except (FileNotFoundError, NotAFeatinvCheckpointError) as error:
        raise EvaluationError(str(error)) from error
    notes: list[str] = []
    photos = load_photos(args.images, args.shards, args.num_images, notes)
    transform = EvalTransform(args.image_size or inverter.image_size)
    images = torch.stack([to_tensor(transform.crop(a)[0]) for a in photos])
    options = {
        "steps": args.steps,
        "pairs": args.pairs,
        "samples": args.samples,
        "alpha": args.alpha,
        "seed": args.seed,
    }
    try:
        numbers = run_experiment(args.experiment, inverter, images, Path(args.out), **options)
    except (ExperimentError, ValueError) as error:
        raise EvaluationError(str(error)) from error
    numbers["notes"] = notes
    print(json.dumps(numbers, indent=2))
    print(f"wrote {args.out}/{args.experiment}*.png and {args.experiment}.json")
    return numbers


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``evaluate.py`` and ``featinv-evaluate``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    try:
        if args.experiment:
            return run_analysis(args, device)
        methods, notes = build_methods(args, device)
        photos = load_photos(args.images, args.shards, args.num_images, notes)
        groups = evaluate(methods, photos, args, device)
        report = write_reports(methods, groups, notes, Path(args.out), len(photos))
    except EvaluationError as error:
        sys.exit(f"evaluate.py: error: {error}")
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, grid.png")
    return report
