"""How much of a photo's colour a layer's features carry, read out linearly.

    python benchmarks/linear_readout.py --weights hed-vgg16.pth --layer conv5_3
        [--image-size 128] [--batches 40] [--threads 2] [--photos DIR [DIR ...]] [--transfer]

Computes Phi's features of the embedded default's first training batches (the bundled photos
and procedural images, batch 32, with the colour augmentation a decoder trains on) and of its
validation views (photos from other packages), then fits two ridge regressions in closed form:

- a **layout readout**: from each map position's standardized features, with their 3x3 and
  whole-map averages, to the mean colour of the image patch that position covers, upsampled
  bilinearly;
- a **global colour readout**: from each channel's mean and maximum over the map
  (``log1p``, standardized) to the image's mean colour, painted on the training data's mean
  image's layout.

Each is scored by normalized and structure error (``featinv.metrics``) on the validation views
and on each ``--photos`` folder (centre crops, as ``evaluate.py`` takes them), beside the
constant predictors (the training data's mean image, each set's own mean image, the training
data's mean image in the set's mean colour) and perfect readouts (each photo's own patch
colours; its own mean colour). The best regularization's score is a reference for what a
decoder trained on the same data can learn about photos from elsewhere; the readouts are
fitted in seconds once the features are cached, a decoder in minutes.

``--transfer`` asks whether more varied photos would do: for each ``--photos`` folder in turn,
the global colour readout is fitted on random crops of the other folders instead (the crop
scales of the embedded default) and scored on that folder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from featinv.data.images import to_tensor
from featinv.data.photos import load_photos
from featinv.data.transforms import EvalTransform, TrainTransform
from featinv.metrics import mean_pairwise_distance, normalized_reconstruction_error, structure_error
from featinv.training import InversionModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import embedded_training_data, layer_benchmark_parser

RIDGE = (1e2, 1e3, 1e4, 3e4, 1e5)
#: random crops per photo that the transfer readout is fitted on
CROPS_PER_PHOTO = 12

Features = Callable[[torch.Tensor], torch.Tensor]


def cached_features(
    options: dict, image_size: int, batches: int, features: Features
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training images (colour-augmented as a decoder sees them) and features of the embedded
    default's first batches, then the validation views' images and features."""
    data = embedded_training_data(options, image_size, batches)

    def read(loader, limit: int | None, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, maps = [], []
        for batch in loader:
            pixels = batch["image"]
            pixels = pixels if pixels.is_floating_point() else pixels.float() / 255
            pixels = data.augment_colour(pixels) if augment else pixels
            maps.append(features(pixels))
            images.append(pixels)
            if limit is not None and len(images) == limit:
                break
        return torch.cat(images), torch.cat(maps)

    return (
        *read(data.train_dataloader(), batches, augment=True),
        *read(data.val_dataloader(), None, augment=False),
    )


def batched(features: Features, images: torch.Tensor, size: int = 64) -> torch.Tensor:
    return torch.cat([features(images[i : i + size]) for i in range(0, len(images), size)])


def ridge_solutions(gram: torch.Tensor, moment: torch.Tensor) -> dict[float, torch.Tensor]:
    """The ridge regression's weights at each strength of ``RIDGE``, solved once."""
    identity = torch.eye(len(gram), dtype=gram.dtype)
    return {ridge: torch.linalg.solve(gram + ridge * identity, moment) for ridge in RIDGE}


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


def channel_statistics(features: torch.Tensor) -> torch.Tensor:
    """One row per image: each channel's mean and maximum over the map, ``log1p``-compressed
    (trained features are heavy-tailed)."""
    stats = torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1).double()
    return torch.log1p(stats.clamp_min(0))


class GlobalColourReadout:
    """Ridge regression from :func:`channel_statistics` to an image's mean colour."""

    def __init__(self, features: torch.Tensor, images: torch.Tensor) -> None:
        stats = channel_statistics(features)
        self.mean, self.std = stats.mean(0), stats.std(0) + 1e-6
        z = (stats - self.mean) / self.std
        colours = images.mean((2, 3)).double()
        self.colour = colours.mean(0)
        self.weights = ridge_solutions(z.T @ z, z.T @ (colours - self.colour))

    def predict(self, features: torch.Tensor, ridge: float) -> torch.Tensor:
        z = (channel_statistics(features) - self.mean) / self.std
        return (z @ self.weights[ridge] + self.colour).float()


def recoloured(layout: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``layout`` (1, 3, S, S) with its mean colour moved to each of ``colours`` (N, 3)."""
    shifted = layout - layout.mean((2, 3), keepdim=True) + colours.view(-1, 3, 1, 1)
    return shifted.clamp(0, 1)


def photo_sets(folders: list[str]) -> dict[str, list]:
    """Each folder's decoded photos, by the folder's name."""
    return {Path(f).name: load_photos(f, limit=10_000).arrays for f in folders}


def print_table(columns: dict[str, torch.Tensor], rows: dict[str, Callable]) -> None:
    """A markdown table: one row per predictor, ``normalized / structure`` error per set.
    Each row's function maps a set's name to its predictions (or ``None``: not applicable)."""
    normalizers = {name: mean_pairwise_distance(images) for name, images in columns.items()}
    print("| predictor | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for label, predict in rows.items():
        cells = []
        for name, images in columns.items():
            predicted = predict(name)
            if predicted is None:
                cells.append("")
                continue
            predicted = predicted.expand_as(images)
            error = normalized_reconstruction_error(images, predicted, normalizers[name]).mean()
            structure = structure_error(images, predicted, normalizers[name]).mean()
            cells.append(f"{error:.3f} / {structure:.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def transfer(sets: dict[str, list], features: Features, image_size: int, layout: torch.Tensor):
    """The global colour readout fitted on the other folders' crops, scored on each folder."""
    crop = TrainTransform(image_size, seed=0, crop_scale=(0.25, 1.0))
    centre = EvalTransform(image_size)
    crops, maps, views, view_maps = {}, {}, {}, {}
    for name, arrays in sets.items():
        crops[name] = torch.stack(
            [to_tensor(crop.crop(a)[0]) for a in arrays for _ in range(CROPS_PER_PHOTO)]
        )
        views[name] = torch.stack([centre(a) for a in arrays])
        maps[name], view_maps[name] = batched(features, crops[name]), features(views[name])
    for held_out in sets:
        others = [n for n in sets if n != held_out]
        print(f"\nthe global colour readout fitted on crops of {', '.join(others)}:")
        readout = GlobalColourReadout(
            torch.cat([maps[n] for n in others]), torch.cat([crops[n] for n in others])
        )
        rows = {"the other folders' mean colour": lambda _, f=readout: recoloured(layout, f.colour)}
        for ridge in RIDGE:
            rows[f"global colour readout, ridge {ridge:g}"] = lambda n, r=ridge, f=readout: (
                recoloured(layout, f.predict(view_maps[n], r))
            )
        rows["each photo's own mean colour"] = lambda n: recoloured(layout, views[n].mean((2, 3)))
        print_table({held_out: views[held_out]}, rows)


def main() -> None:
    parser = layer_benchmark_parser(__doc__, "conv5_3")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--photos", nargs="+", default=[], help="folders of photos to score on")
    parser.add_argument("--transfer", action="store_true", help="needs two --photos folders")
    args = parser.parse_args()
    if args.transfer and len(args.photos) < 2:
        parser.error("--transfer needs at least two --photos folders")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the saturation factors of the colour augmentation
    options = {"architecture": args.architecture, "layer": args.layer, "weights": args.weights}
    module = InversionModule(
        representation="cnn", representation_options=options, image_size=args.image_size
    )

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module.features(images)

    started = time.monotonic()
    images, maps, views, view_maps = cached_features(
        options, args.image_size, args.batches, features
    )
    sets = photo_sets(args.photos)
    columns = {"validation views": views}
    column_maps = {"validation views": view_maps}
    centre = EvalTransform(args.image_size)
    for name, arrays in sets.items():
        columns[name] = torch.stack([centre(a) for a in arrays])
        column_maps[name] = batched(features, columns[name])
    print(
        f"{args.layer} at {args.image_size} px: {len(images)} training crops, map "
        f"{tuple(maps.shape[1:])}; scored on "
        + ", ".join(f"{name} ({len(c)})" for name, c in columns.items())
        + f" ({time.monotonic() - started:.0f} s)\n"
    )
    layout = images.mean(0, keepdim=True)
    grid = tuple(maps.shape[-2:])
    mean, std = maps.mean((0, 2, 3), keepdim=True), maps.std((0, 2, 3), keepdim=True) + 1e-3
    inputs = readout_inputs(maps, mean, std)
    targets = F.adaptive_avg_pool2d(images, grid).permute(0, 2, 3, 1).reshape(-1, 3).double()
    layout_weights = ridge_solutions(inputs.T @ inputs, inputs.T @ targets)
    colour_readout = GlobalColourReadout(maps, images)

    def layout_readout(name: str, ridge: float) -> torch.Tensor:
        target = columns[name]
        rows = readout_inputs(column_maps[name], mean, std)
        colours = (rows @ layout_weights[ridge]).float().reshape(len(target), *grid, 3)
        colours = colours.permute(0, 3, 1, 2)
        return F.interpolate(colours, size=target.shape[-2:], mode="bilinear").clamp(0, 1)

    rows: dict[str, Callable] = {
        "training data's mean image": lambda _: layout,
        "the set's own mean image (oracle)": lambda n: columns[n].mean(0, keepdim=True),
    }
    for ridge in RIDGE:
        rows[f"layout readout, ridge {ridge:g}"] = lambda n, r=ridge: layout_readout(n, r)
    for ridge in RIDGE:
        rows[f"global colour readout, ridge {ridge:g}"] = lambda n, r=ridge: recoloured(
            layout, colour_readout.predict(column_maps[n], r)
        )
    rows["a perfect layout readout"] = lambda n: F.interpolate(
        F.adaptive_avg_pool2d(columns[n], grid), size=columns[n].shape[-2:], mode="bilinear"
    )
    rows["the set's own mean colour on that layout (oracle)"] = lambda n: recoloured(
        layout, columns[n].mean((0, 2, 3))
    )
    rows["a perfect global colour readout"] = lambda n: recoloured(layout, columns[n].mean((2, 3)))
    print_table(columns, rows)
    if args.transfer:
        transfer(sets, features, args.image_size, layout)


if __name__ == "__main__":
    main()
