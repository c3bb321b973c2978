"""Shared by the benchmarks: the machine they ran on, real photo crops, best-of timing.

Importing it sets the process up as featinv's commands run (``featinv.keep_freed_memory``):
the figures are those a user of ``train.py`` and ``evaluate.py`` gets.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from featinv.data.bundled import TRAIN_PHOTOS, VAL_PHOTOS, photo_path
from featinv.data.datamodule import InversionDataModule
from featinv.data.images import decode_rgb, resize_shorter_side

try:
    from featinv.runtime import keep_freed_memory
except ImportError:  # an older featinv measured for a before/after comparison
    keep_freed_memory = None

ALLOCATOR = (
    "glibc keeps freed memory (as featinv's commands run)"
    if keep_freed_memory is not None and keep_freed_memory()
    else "the C library's default allocator"
)


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}; {ALLOCATOR}"


def photo_crops(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """``(batch, size, size, 3)`` uint8 random crops of the bundled photos."""
    rng = np.random.default_rng(seed)
    photos = [
        resize_shorter_side(decode_rgb(photo_path(n)), size + 32) for n in TRAIN_PHOTOS + VAL_PHOTOS
    ]
    crops = []
    for i in range(batch):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - size + 1)
        left = rng.integers(0, photo.shape[1] - size + 1)
        crops.append(photo[top : top + size, left : left + size])
    return np.stack(crops)


def embedded_training_data(options: dict, image_size: int, batches: int) -> InversionDataModule:
    """The embedded default's data for a network layer (bundled photos and procedural images,
    batch 32, seed 0), set up for ``batches`` training batches read in this process."""
    data = InversionDataModule(
        image_size=image_size,
        batch_size=32,
        num_workers=0,
        batches_per_epoch=batches,
        crop_scale=(0.25, 1.0),
        synthetic_fraction=0.5,
        saturation=(0.0, 1.0),
        colour_prior=(0.485, 0.456, 0.406),
        seed=0,
        representation="cnn",
        representation_options=options,
    )
    data.setup("fit")
    return data


def layer_benchmark_parser(doc: str | None, layer: str) -> argparse.ArgumentParser:
    """The options the benchmarks of one network layer share (weights, architecture, layer,
    torch threads); each adds its own."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True)
    parser.add_argument("--architecture", default="vgg16")
    parser.add_argument("--layer", default=layer)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` runs after one warm-up run, in seconds."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def feature_benchmark_args(doc: str | None) -> argparse.Namespace:
    """The options the feature benchmarks share; sets torch's thread count."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (hog_speed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {describe_machine()}")
    print(f"batch {args.batch} x {args.size}x{args.size}, {args.threads} torch threads")
    return args


def print_gpu_figure(
    name: str, module: torch.nn.Module, images: torch.Tensor, repeats: int
) -> None:
    """Milliseconds per image of ``module`` on the GPU, when there is one."""
    if not torch.cuda.is_available():
        return
    gpu_images, gpu_module = images.cuda(), module.cuda()

    def on_gpu() -> None:
        gpu_module(gpu_images)
        torch.cuda.synchronize()

    with torch.inference_mode():
        seconds = best_time(on_gpu, repeats) / len(images)
    print(f"{name} ({torch.cuda.get_device_name(0)}): {seconds * 1e3:7.3f} ms/image")
