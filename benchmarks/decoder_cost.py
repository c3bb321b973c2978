"""What a network layer's default decoder costs next to the network itself, per layer.

    python benchmarks/decoder_cost.py --weights hed-vgg16.pth [--layers conv1_2 ... conv5_3]
                                      [--batch 32] [--size 64] [--threads 2] [--repeats 3]

For each layer: the time of Phi's forward pass on a batch of real photo crops (the reference,
paid by every training step), and of a training step of the decoder the layer gets by default
(forward, MSE, backward, Adam), with the ratio decoder / Phi; the same for the paper's decoder
(three 5x5 convolutions at the map's resolution, no contraction: featinv 0.2's default), whose
ratio shows what the sizing saves (timed on an eighth of the batch and scaled by 8: its fine
maps take tens of seconds per full batch). ``--weights random`` times random weights (speed
does not depend on them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import best_time, describe_machine, photo_crops

from featinv.data.images import pixels_to_float
from featinv.decoders import build_decoder, complete_decoder_options
from featinv.representations import build_representation

LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")


def step_time(
    decoder: torch.nn.Module, features: torch.Tensor, images: torch.Tensor, repeats: int
) -> float:
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4)
    size = images.shape[-1]

    def step() -> None:
        loss = (decoder(features)[..., :size, :size] - images).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return best_time(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default="random")
    parser.add_argument("--architecture", default="vgg16")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {describe_machine()}")
    print(f"batch {args.batch} x {args.size}x{args.size}, {args.threads} torch threads")
    images = pixels_to_float(
        torch.from_numpy(photo_crops(args.batch, args.size)).permute(0, 3, 1, 2)
    )
    print(
        "| layer | map | Phi forward (s) | default decoder step (s) | ratio "
        "| paper's decoder step (s) | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for layer in args.layers:
        phi = build_representation(
            "cnn", architecture=args.architecture, layer=layer, weights=args.weights
        )
        with torch.no_grad():
            phi_time = best_time(lambda phi=phi: phi(images), args.repeats)
            features = phi(images)
        default = build_decoder(phi, args.size, **complete_decoder_options(phi, args.size))
        paper = build_decoder(
            phi, args.size, **complete_decoder_options(phi, args.size, legacy=True)
        )
        fitted = step_time(default, features, images, args.repeats)
        part = max(args.batch // 8, 1)
        legacy = step_time(paper, features[:part], images[:part], 1) * args.batch / part
        shape = "x".join(map(str, phi.output_shape(args.size)))
        print(
            f"| {layer} | {shape} | {phi_time:.2f} | {fitted:.2f} | {fitted / phi_time:.1f} "
            f"| {legacy:.2f} | {legacy / phi_time:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
