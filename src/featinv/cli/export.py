"""``featinv-export CHECKPOINT OUT``: a trained decoder as ``OUT.safetensors`` to share.

A ``.safetensors`` file holds tensors and a string-to-string metadata map, nothing that runs
when read (``featinv.exported`` describes what goes in).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from featinv.cli.common import add_file_trust_arguments, console_script, reported
from featinv.exported import export_decoder, read_exported

PROG = "featinv-export"


def main(argv: list[str] | None = None) -> Path:
    """Entry point of ``featinv-export``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a trained decoder as a .safetensors file to share (no code runs "
        "when it is read).",
    )
    parser.add_argument("checkpoint", help="a featinv checkpoint (best.ckpt)")
    parser.add_argument(
        "out",
        help="output path (.safetensors is added if missing), or a folder to write "
        "RUN-NAME.safetensors into",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output file if it exists"
    )
    parser.add_argument(
        "--include-representation",
        action="store_true",
        help="also embed the representation's network weights (AlexNet, VGG: a third party's)",
    )
    add_file_trust_arguments(parser)
    args = parser.parse_args(argv)
    with reported(PROG):
        out = export_decoder(
            args.checkpoint,
            args.out,
            args.include_representation,
            args.trust_checkpoint,
            args.overwrite,
            args.architecture,
        )
        config, _ = read_exported(out)
    size = out.stat().st_size / 2**20
    print(
        f"wrote {out} ({size:.2f} MiB): {config['representation']} decoder at "
        f"{config['image_size']} px, representation weights: {config['representation_weights']}"
    )
    return out


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
