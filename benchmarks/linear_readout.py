"""How much of a photo's coarse colour layout a layer's features carry, read out linearly.

    python benchmarks/linear_readout.py --weights hed-vgg16.pth --layer conv5_3
        [--image-size 128] [--batches 40] [--threads 2]

Computes Phi's features of the embedded default's first training batches (the bundled photos
and procedural images, batch 32) and of its validation views (photos from other packages),
then fits a ridge regression from each map position's standardized features, with their 3x3
and whole-map averages, to the mean colour of the image patch that position covers. The
prediction, upsampled bilinearly, is scored on the validation views by normalized and
structure error (``featinv.metrics``), beside the two constant predictors: the training
data's mean image and the views' own mean image. The best regularization's score is a
reference for what a decoder trained on the same data can learn about photos from elsewhere;
the readout is fitted in seconds once the features are cached, a decoder in minutes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from featinv.metrics import mean_pairwise_distance, normalized_reconstruction_error, structure_error
from featinv.training import InversionModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import embedded_training_data, layer_benchmark_parser

RIDGE = (1e2, 1e3, 1e4, 3e4, 1e5)


def cached_features(
    options: dict, image_size: int, batches: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training images and features of the embedded default's first batches, then the
    validation views' images and features."""
    data = embedded_training_data(options, image_size, batches)
    module = InversionModule(
        representation="cnn", representation_options=options, image_size=image_size
    )

    def read(loader, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        images, features = [], []
        for batch in loader:
            pixels = batch["image"]
            pixels = pixels if pixels.is_floating_point() else pixels.float() / 255
            with torch.no_grad():
                features.append(module.features(pixels))
            images.append(pixels)
            if limit is not None and len(images) == limit:
                break
        return torch.cat(images), torch.cat(features)

    return (*read(data.train_dataloader(), batches), *read(data.val_dataloader(), None))


def readout_inputs(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One row per map position: its standardized features, their 3x3 and whole-map
    averages, and a constant."""
    z = (features - mean) / std
    parts = [
        z,
        F.avg_pool2d(z, 3, 1, 1, count_include_pad=False),
        z.mean((2, 3), keepdim=True).expand_as(z),
    ]
    rows = torch.cat(parts, 1).permute(0, 2, 3, 1).flatten(0, 2).double()
    return torch.cat([rows, torch.ones(len(rows), 1, dtype=rows.dtype)], 1)


def main() -> None:
    parser = layer_benchmark_parser(__doc__, "conv5_3")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {"architecture": args.architecture, "layer": args.layer, "weights": args.weights}
    started = time.monotonic()
    images, features, views, view_features = cached_features(options, args.image_size, args.batches)
    print(
        f"{args.layer} at {args.image_size} px: {len(images)} training crops, "
        f"{len(views)} validation views, map {tuple(features.shape[1:])} "
        f"({time.monotonic() - started:.0f} s)"
    )
    normalizer = mean_pairwise_distance(views)

    def score(name: str, predicted: torch.Tensor) -> None:
        error = normalized_reconstruction_error(views, predicted, normalizer).mean()
        structure = structure_error(views, predicted, normalizer).mean()
        print(f"{name:<34} normalized error {error:.3f}  structure error {structure:.3f}")

    score("training data's mean image", images.mean(0, keepdim=True).expand_as(views))
    score("views' own mean image", views.mean(0, keepdim=True).expand_as(views))
    coarse = F.adaptive_avg_pool2d(views, tuple(view_features.shape[-2:]))
    score("a perfect readout", F.interpolate(coarse, size=views.shape[-2:], mode="bilinear"))
    mean = features.mean((0, 2, 3), keepdim=True)
    std = features.std((0, 2, 3), keepdim=True) + 1e-3
    inputs = readout_inputs(features, mean, std)
    targets = (
        F.adaptive_avg_pool2d(images, tuple(features.shape[-2:]))
        .permute(0, 2, 3, 1)
        .reshape(-1, 3)
        .double()
    )
    gram, moment = inputs.T @ inputs, inputs.T @ targets
    view_inputs = readout_inputs(view_features, mean, std)
    for ridge in RIDGE:
        identity = torch.eye(len(gram), dtype=gram.dtype)
        weights = torch.linalg.solve(gram + ridge * identity, moment)
        colours = (view_inputs @ weights).float().reshape(len(views), *view_features.shape[-2:], 3)
        predicted = F.interpolate(
            colours.permute(0, 3, 1, 2), size=views.shape[-2:], mode="bilinear"
        ).clamp(0, 1)
        score(f"linear readout, ridge {ridge:g}", predicted)


if __name__ == "__main__":
    main()
