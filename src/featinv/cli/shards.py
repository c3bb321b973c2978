"""``featinv-shards SRC OUT``: an image folder as webdataset shards
(``featinv.data.shard_writer``); rerun the same command to resume."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from featinv.cli.common import int_at_least, reported
from featinv.data.shard_writer import write_shards

PROG = "featinv-shards"


def quality(text: str) -> int:
    """argparse type: a JPEG quality, 1 to 100."""
    value = int_at_least(1)(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be at most 100, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    """``featinv-shards SRC OUT``: write an image folder into webdataset shards."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write an image folder (ImageNet train or val) into webdataset tar shards. "
        "Rerun the same command to resume an interrupted run.",
    )
    parser.add_argument("source", help="image folder: class folders, or flat (with --labels)")
    parser.add_argument("output", help="folder for the .tar shards")
    parser.add_argument(
        "--size", type=int_at_least(8), default=256, help="shorter side of stored images"
    )
    parser.add_argument("--samples-per-shard", type=int_at_least(1), default=1000)
    parser.add_argument("--prefix", default="shard")
    parser.add_argument("--quality", type=quality, default=95, help="JPEG quality (1-100)")
    parser.add_argument("--format", default="jpg", choices=["jpg", "png"], help="stored format")
    parser.add_argument(
        "--features",
        default=None,
        metavar="REPRESENTATION",
        help="also store a loader representation's data per image (sift: its keypoints)",
    )
    parser.add_argument(
        "--workers", type=int_at_least(1), default=1, help="processes writing shards in parallel"
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="labels of a flat folder: 'NAME LABEL' lines or LOC_val_solution.csv",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="classes.json of the training shards, so labels get the training indices",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    with reported(PROG, ValueError):
        summary = write_shards(
            args.source,
            args.output,
            size=args.size,
            samples_per_shard=args.samples_per_shard,
            prefix=args.prefix,
            quality=args.quality,
            image_format=args.format,
            features=args.features,
            workers=args.workers,
            labels_file=args.labels,
            classes=args.classes,
        )
    print(summary)
    print(f"summary: {Path(args.output) / 'summary.json'}")


if __name__ == "__main__":
    main()
