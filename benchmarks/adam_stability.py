"""Whether Adam trains a layer's decoder stably: the loss curve under several Adam settings.

    python benchmarks/adam_stability.py --weights hed-vgg16.pth [--layer conv2_2] [--steps 300]
        [--variants '[{"seed": 1, "warmup": 100, "beta2": 0.99}, ...]'] [--threads 2]

Computes the features of 60 batches of the embedded default's training data (the bundled
photos and procedural images, 64 px crops, batch 32) once, then trains the layer's default
decoder on them (MSE, Adam at ``lr``, the learning rate rising linearly over ``warmup`` steps)
for each variant, from the variant's seed. Prints, per variant, the largest training loss, the
step it was reached at and the mean of the last 20 losses: a divergence shows as a maximum
orders of magnitude above the first steps' losses (about 0.2). Keys of a variant: ``seed``
(0), ``lr`` (1e-3), ``beta2`` (0.999), ``warmup`` (0), ``clip`` (gradient-norm clipping, off).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from featinv.training import InversionModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import embedded_training_data, layer_benchmark_parser

DEFAULT_VARIANTS = [
    {"seed": 1},
    {"seed": 1, "warmup": 100},
    {"seed": 1, "warmup": 100, "beta2": 0.99},
]


def cached_batches(options: dict, batches: int) -> tuple[list, list]:
    """Images and Phi's features of the embedded default's first training batches."""
    data = embedded_training_data(options, 64, batches)
    module = InversionModule(representation="cnn", representation_options=options, image_size=64)
    images, features = [], []
    for batch in data.train_dataloader():
        pixels = batch["image"]
        pixels = pixels if pixels.is_floating_point() else pixels.float() / 255
        images.append(pixels)
        features.append(module.features(pixels))
        if len(images) == batches:
            break
    return images, features


def train(options: dict, variant: dict, images: list, features: list, steps: int) -> list[float]:
    torch.manual_seed(variant.get("seed", 0))
    decoder = InversionModule(
        representation="cnn", representation_options=options, image_size=64
    ).decoder.train()
    optimizer = torch.optim.Adam(
        decoder.parameters(),
        lr=variant.get("lr", 1e-3),
        betas=(0.9, variant.get("beta2", 0.999)),
    )
    warmup = variant.get("warmup", 0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
    )
    losses = []
    for step in range(steps):
        index = step % len(images)
        output = decoder(features[index])
        loss = F.mse_loss(output, images[index][..., : output.shape[-2], : output.shape[-1]])
        optimizer.zero_grad()
        loss.backward()
        if variant.get("clip"):
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), variant["clip"])
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = layer_benchmark_parser(__doc__, "conv2_2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--variants", type=json.loads, default=DEFAULT_VARIANTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {"architecture": args.architecture, "layer": args.layer, "weights": args.weights}
    images, features = cached_batches(options, 60)
    print(f"{args.layer}: {len(images)} batches of features {tuple(features[0].shape)}")
    for variant in args.variants:
        started = time.monotonic()
        losses = torch.tensor(train(options, variant, images, features, args.steps))
        print(
            f"{json.dumps(variant)}: max loss {losses.max():.3g} at step {int(losses.argmax())}, "
            f"last 20 {losses[-20:].mean():.4f} ({time.monotonic() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
