"""``python evaluate.py`` / ``featinv-evaluate``: learned decoders and the optimization
baseline scored on the same photos (``featinv.evaluation``), or one of the paper's analyses."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from featinv.cli.common import (
    CommandError,
    console_script,
    default_device,
    int_at_least,
    reported,
    torch_device,
)
from featinv.data.photos import NoPhotosError, load_photos
from featinv.data.transforms import EvalTransform
from featinv.evaluation.experiments import EXPERIMENTS, ExperimentError, run_experiment
from featinv.evaluation.methods import build_methods, score_methods
from featinv.evaluation.reports import write_reports
from featinv.inverter import Inverter
from featinv.networks import MAX_FILE_IMAGE_SIZE
from featinv.reliability import json_safe
from featinv.runtime import keep_freed_memory

PROG = "featinv-evaluate"

positive = int_at_least(1)
at_least_two = int_at_least(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``evaluate.py`` (every value checked by argparse)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate trained decoders and the optimization baseline on the same images.",
    )
    parser.add_argument("--checkpoint", action="append", help="a featinv checkpoint (repeatable)")
    parser.add_argument(
        "--baseline", action="store_true", help="also run the optimization baseline"
    )
    parser.add_argument("--representation", action="append", help="baseline on this representation")
    parser.add_argument("--layer", help="layer of a network given to --representation")
    parser.add_argument(
        "--architecture",
        help="network of --representation cnn (vgg16, vggm, package.module:fn), and of "
        "checkpoints whose network is given by import path (nothing they name is imported "
        "without it or --trust-checkpoint)",
    )
    parser.add_argument(
        "--weights",
        "--alexnet-weights",
        default=None,
        help="weights file of a network given to --representation",
    )
    parser.add_argument("--baseline-iterations", type=positive, default=300, help="Algorithm 1's T")
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help="also refine each checkpoint's reconstructions by Algorithm 1 (kind 'hybrid')",
    )
    parser.add_argument(
        "--hybrid-iterations", type=positive, default=50, help="iterations of the refinement"
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load what checkpoints name even if that runs code (a pickle that names code, a "
        "network given by import path): trusted files only",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", help="a folder of photos")
    source.add_argument("--shards", help="a shard pattern (default: the bundled validation photos)")
    parser.add_argument(
        "--num-images", type=at_least_two, default=100, help="images to use (the papers: 100)"
    )
    parser.add_argument(
        "--image-size",
        type=int_at_least(8, MAX_FILE_IMAGE_SIZE),
        default=None,
        help="size of the baseline's images (default: the representation's own); decoders "
        "are evaluated at the size they were trained at",
    )
    parser.add_argument("--out", default="evaluation", help="output folder")
    parser.add_argument("--device", type=torch_device, default=default_device())
    parser.add_argument("--batch-size", type=positive, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the baseline's initial noise")
    analysis = parser.add_argument_group("the paper's analyses (Sect. 4.3-4.5), on one checkpoint")
    analysis.add_argument("--experiment", choices=EXPERIMENTS, help="run one analysis instead")
    analysis.add_argument(
        "--steps", type=at_least_two, default=8, help="interpolate: points per pair"
    )
    analysis.add_argument("--pairs", type=positive, default=2, help="interpolate: image pairs")
    analysis.add_argument("--samples", type=positive, default=16, help="sample: random vectors")
    analysis.add_argument("--alpha", type=float, default=2.0, help="sample: contrast factor")
    return parser.parse_args(argv)


def run_analysis(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """``--experiment NAME``: one of the paper's analyses on one checkpoint."""
    if not args.checkpoint or len(args.checkpoint) != 1:
        raise CommandError(f"--experiment {args.experiment} needs exactly one --checkpoint")
    inverter = Inverter.load(
        args.checkpoint[0], device, args.trust_checkpoint, architecture=args.architecture
    )
    photos = load_photos(args.images, args.shards, args.num_images)
    transform = EvalTransform(args.image_size or inverter.image_size)
    images = torch.stack([transform(a) for a in photos.arrays])
    options = {
        "steps": args.steps,
        "pairs": args.pairs,
        "samples": args.samples,
        "alpha": args.alpha,
        "seed": args.seed,
    }
    try:
        numbers = run_experiment(args.experiment, inverter, images, Path(args.out), **options)
    except ValueError as error:  # an analysis that does not apply to these images
        raise CommandError(str(error)) from error
    numbers["notes"] = photos.notes
    print(json.dumps(json_safe(numbers), indent=2))
    print(f"wrote {args.out}/{args.experiment}*.png and {args.experiment}.json")
    return numbers


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``evaluate.py`` and ``featinv-evaluate``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    keep_freed_memory()
    torch.manual_seed(args.seed)
    device = args.device
    with reported(PROG, NoPhotosError, ExperimentError):
        if args.experiment:
            return run_analysis(args, device)
        methods, notes = build_methods(
            args.checkpoint or [],
            args.representation or [],
            args.baseline,
            device,
            image_size=args.image_size,
            layer=args.layer,
            weights=args.weights,
            architecture=args.architecture,
            baseline_iterations=args.baseline_iterations,
            seed=args.seed,
            hybrid_iterations=args.hybrid_iterations if args.hybrid else None,
            trust_checkpoint=args.trust_checkpoint,
        )
        photos = load_photos(args.images, args.shards, args.num_images)
        groups = score_methods(methods, photos.arrays, args.batch_size, device)
        report = write_reports(
            methods, groups, notes + photos.notes, Path(args.out), len(photos.arrays)
        )
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, grid.png")
    return report


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
