"""``featinv-convert-weights IN OUT.pth``: a network's published weights as a featinv weights
file for a built-in architecture: MatConvNet ``.mat`` models
(``featinv.representations.matconvnet``) and Keras HDF5 weights, Keras 2 ``.h5``, Keras 3
``.weights.h5`` and ``.keras`` (``featinv.representations.keras``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from featinv.cli.common import CommandError, console_script, reported
from featinv.reliability import atomic_write
from featinv.representations.architectures import ARCHITECTURES
from featinv.representations.keras import convert_keras, convert_keras_detected, is_keras_file
from featinv.representations.matconvnet import ConversionError, convert, convert_detected

PROG = "featinv-convert-weights"


def main(argv: list[str] | None = None) -> Path:
    """Entry point of ``featinv-convert-weights``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a MatConvNet simplenn .mat model or Keras weights (.h5, "
        ".weights.h5, .keras) into a featinv weights file.",
    )
    parser.add_argument(
        "source", help="e.g. imagenet-vgg-m.mat, vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    )
    parser.add_argument("target", help="weights file to write, e.g. imagenet-vgg-m.pth")
    parser.add_argument(
        "--architecture",
        choices=list(ARCHITECTURES),
        help="the built-in network it is (default: detected from the layers)",
    )
    parser.add_argument(
        "--convolutions-only",
        action="store_true",
        help="Keras files: keep the convolutions and leave out the dense layers (a VGG "
        "backbone fine-tuned under a new classifier head)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the target file if it exists"
    )
    args = parser.parse_args(argv)
    target = Path(args.target)
    with reported(PROG, ConversionError):
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
        if is_keras_file(args.source):
            only = args.convolutions_only
            converted = (
                convert_keras(args.source, args.architecture, only)
                if args.architecture
                else convert_keras_detected(args.source, only)
            )
        else:
            if args.convolutions_only:
                raise CommandError("--convolutions-only is for Keras files")
            converted = (
                convert(args.source, args.architecture)
                if args.architecture
                else convert_detected(args.source)
            )
        architecture = converted["architecture"]
        with atomic_write(target) as stream:
            torch.save(converted, stream)
    layers = len({k.rsplit(".", 1)[0] for k in converted["state_dict"]})
    print(
        f"wrote {target}: {architecture}, {layers} layers with weights, input mean "
        f"{[round(v, 3) for v in converted['normalization']['mean']]} "
        f"({'BGR' if converted['normalization']['bgr'] else 'RGB'}, 0-255)"
        + (", HED's side outputs kept" if "side_outputs" in converted else "")
        + (f", left out: {', '.join(converted['left_out'])}" if "left_out" in converted else "")
        + "\n"
        f"use it with --model.representation cnn --model.representation_options "
        f"'{{architecture: {architecture}, layer: LAYER, weights: {target}}}'"
    )
    return target


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
