"""``featinv-convert-weights IN OUT.pth``: a network's published weights as a featinv weights
file for a built-in architecture (``featinv.representations.matconvnet``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from featinv.cli.common import console_script, reported
from featinv.reliability import atomic_write
from featinv.representations.architectures import ARCHITECTURES
from featinv.representations.matconvnet import ConversionError, convert, detect

PROG = "featinv-convert-weights"


def main(argv: list[str] | None = None) -> Path:
    """Entry point of ``featinv-convert-weights``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a MatConvNet simplenn .mat model into a featinv weights file.",
    )
    parser.add_argument("source", help="MatConvNet model, e.g. imagenet-vgg-m.mat")
    parser.add_argument("target", help="weights file to write, e.g. imagenet-vgg-m.pth")
    parser.add_argument(
        "--architecture",
        choices=list(ARCHITECTURES),
        help="the built-in network it is (default: detected from the layers)",
    )
    args = parser.parse_args(argv)
    with reported(PROG, ConversionError):
        architecture = args.architecture or detect(args.source)
        converted = convert(args.source, architecture)
        target = Path(args.target)
        with atomic_write(target) as stream:
            torch.save(converted, stream)
    layers = len({k.rsplit(".", 1)[0] for k in converted["state_dict"]})
    print(
        f"wrote {target}: {architecture}, {layers} layers with weights, input mean "
        f"{[round(v, 3) for v in converted['normalization']['mean']]} (RGB, 0-255)\n"
        f"use it with --model.representation cnn --model.representation_options "
        f"'{{architecture: {architecture}, layer: LAYER, weights: {target}}}'"
    )
    return target


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
