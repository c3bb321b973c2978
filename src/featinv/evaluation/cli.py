"""``python evaluate.py`` / ``featinv-evaluate``: score learned decoders and the optimization
baseline on the same images, or run one of the paper's analyses on a checkpoint.

Writes ``report.json``, ``report.md`` and PNG figures (``featinv.evaluation.reports``); every
problem with the user's input ends in one line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from featinv.checkpoint import NotAFeatinvCheckpointError
from featinv.data.photos import NoPhotosError, load_photos
from featinv.data.transforms import EvalTransform
from featinv.evaluation.experiments import EXPERIMENTS, ExperimentError, run_experiment
from featinv.evaluation.methods import (
    Method,
    baseline_methods,
    hybrid_method,
    learned_method,
    representation_for_baseline,
    score_methods,
)
from featinv.evaluation.reports import write_reports
from featinv.inverter import Inverter
from featinv.reliability import console_script


class EvaluationError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


#: Errors that mean "the input is wrong", not "featinv is broken".
INPUT_ERRORS = (FileNotFoundError, NotAFeatinvCheckpointError, NoPhotosError, ExperimentError)


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _integer_at_least(text, 1)


def at_least_two(text: str) -> int:
    """argparse type: an integer of at least 2."""
    return _integer_at_least(text, 2)


def _integer_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


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
    methods = [learned_method(path, device, image_size, trust_checkpoint) for path in checkpoints]
    _name_apart(methods, checkpoints)
    notes: list[str] = []
    if hybrid_iterations is not None:
        if not checkpoints:
            raise EvaluationError("--hybrid refines a decoder's output: give --checkpoint PATH")
        for learned, path in zip(list(methods), checkpoints, strict=True):
            try:
                hybrid = hybrid_method(path, device, hybrid_iterations, seed, trust_checkpoint)
            except ValueError as error:  # a representation without gradients
                raise EvaluationError(f"--hybrid: {error}") from None
            hybrid.name = f"hybrid/{learned.name}"
            methods.append(hybrid)
    if baseline:
        targets = [(m.representation, m.image_size) for m in methods]
        for name in representations:
            try:
                phi = representation_for_baseline(name, device, layer, weights, architecture)
            except ValueError as error:  # an unknown name, layer or network
                raise EvaluationError(f"--representation {name}: {error}") from None
            targets.append((phi, image_size or phi.default_image_size))
        if not targets:
            raise EvaluationError("--baseline needs a --checkpoint or a --representation to invert")
        found, notes = baseline_methods(targets, baseline_iterations, seed)
        methods += found
    elif representations:
        raise EvaluationError("--representation names what --baseline inverts: add --baseline")
    if not methods:
        raise EvaluationError("nothing to evaluate: give --checkpoint PATH and/or --baseline")
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``evaluate.py`` (every value checked by argparse)."""
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate trained decoders and the optimization baseline on the same images.",
    )
    parser.add_argument("--checkpoint", action="append", help="a featinv checkpoint (repeatable)")
    parser.add_argument(
        "--baseline", action="store_true", help="also run the optimization baseline"
    )
    parser.add_argument("--representation", action="append", help="baseline on this representation")
    parser.add_argument("--layer", help="layer of a network given to --representation")
    parser.add_argument(
        "--architecture", help="network of --representation cnn (vgg16, vggm, package.module:fn)"
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
        help="load checkpoints that need full unpickling (runs code they name: trusted files only)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", help="a folder of photos")
    source.add_argument("--shards", help="a shard pattern (default: the bundled validation photos)")
    parser.add_argument(
        "--num-images", type=at_least_two, default=100, help="images to use (the papers: 100)"
    )
    parser.add_argument(
        "--image-size", type=positive, default=None, help="default: each checkpoint's own"
    )
    parser.add_argument("--out", default="evaluation", help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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
        raise EvaluationError(f"--experiment {args.experiment} needs exactly one --checkpoint")
    inverter = Inverter.load(args.checkpoint[0], device, args.trust_checkpoint)
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
        raise EvaluationError(str(error)) from error
    numbers["notes"] = photos.notes
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
    except (EvaluationError, *INPUT_ERRORS) as error:
        sys.exit(f"evaluate.py: error: {error}")
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, grid.png")
    return report


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
