"""Loader throughput: featinv's shard pipeline against plain Pillow decoding of the same files.

    python benchmarks/loader_speed.py [--images 400] [--size 256] [--crop 224] [--workers 2]

Writes ImageNet-like shards (JPEG q95, shorter side ``--size``, real photos of varied aspect)
with ``featinv-shards``, then reads them, in the same process, three ways:

* **Pillow**: every ``.jpg`` member of the tars opened with ``tarfile``, decoded with
  ``Image.open(...).convert("RGB")`` into a NumPy array: the floor any loader pays;
* **featinv, one worker**: the training pipeline (decode, random crop, flip, float tensor,
  batching, skip accounting) in this process, i.e. what one loader worker does;
* **featinv, N workers**: the same through ``WebLoader`` with ``--workers`` processes.

Prints img/s for each and the ratio of the one-worker pipeline to Pillow (the bar: >= 0.9x).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from featinv.data.bundled import TRAIN_PHOTOS, VAL_PHOTOS, photo_path
from featinv.data.images import decode_rgb, resize_shorter_side
from featinv.data.shard_writer import write_shards
from featinv.data.shards import shard_pipeline
from featinv.data.transforms import TrainTransform


def write_source(folder: Path, count: int, size: int) -> None:
    """``count`` JPEG crops of the bundled photos, 4:3 or 3:4 like most ImageNet photos."""
    rng = np.random.default_rng(0)
    photos = [resize_shorter_side(decode_rgb(photo_path(n)), 2 * size) for n in TRAIN_PHOTOS]
    photos += [resize_shorter_side(decode_rgb(photo_path(n)), 2 * size) for n in VAL_PHOTOS]
    folder.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = (size, size * 4 // 3) if i % 3 else (size * 4 // 3, size)
        h, w = min(h, photo.shape[0]), min(w, photo.shape[1])
        top = rng.integers(0, photo.shape[0] - h + 1)
        left = rng.integers(0, photo.shape[1] - w + 1)
        Image.fromarray(photo[top : top + h, left : left + w]).save(
            folder / f"{i:05d}.jpg", quality=95
        )


def pillow_pass(shards: list[str]) -> int:
    count = 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    data = tar.extractfile(member).read()
                    np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                    count += 1
    return count


def featinv_pass(pipeline, images: int, batch: int) -> int:
    count = 0
    for b in itertools.islice(pipeline, images // batch):
        count += len(b["image"])
    return count


def rates(passes: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Best images per second of each pass, the passes interleaved (after a warm-up of each)
    so that a noisy neighbour slows all of them alike."""
    best = dict.fromkeys(passes, 0.0)
    for fn in passes.values():
        fn()
    for _ in range(repeats):
        for name, fn in passes.items():
            start = time.perf_counter()
            count = fn()
            best[name] = max(best[name], count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=256, help="stored shorter side")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a loader worker
    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        write_source(Path(tmp) / "src", args.images, args.size)
        summary = write_shards(
            Path(tmp) / "src", Path(tmp) / "shards", size=args.size, samples_per_shard=100,
            progress=False,
        )  # fmt: skip
        shards = summary.shards
        megabytes = sum(Path(s).stat().st_size for s in shards) / 2**20
        print(
            f"{summary.written} JPEG q95 samples, shorter side {args.size}, in {len(shards)} "
            f"shards ({megabytes:.0f} MiB); crops {args.crop}, batch {args.batch}; "
            f"best of {args.repeats} passes"
        )

        def pipeline() -> wds.WebDataset:
            transform = TrainTransform(args.crop, seed=0)
            return shard_pipeline(shards, transform, args.batch, train=True, shuffle_buffer=100)

        stream = iter(pipeline())
        passes = {
            "pillow": lambda: pillow_pass(shards),
            "one": lambda: featinv_pass(stream, summary.written, args.batch),
        }
        best = rates(passes, args.repeats)
        print(f"Pillow decode only (1 process):        {best['pillow']:7.1f} img/s")
        print(f"featinv training pipeline (1 worker):  {best['one']:7.1f} img/s")
        print(f"ratio featinv / Pillow, one worker: {best['one'] / best['pillow']:.2f}x")
        if args.workers > 0:
            # Timed alone (idle workers would prefetch while other passes run) and long enough
            # that the prefetched batches are a small part of the count.
            loader = wds.WebLoader(pipeline(), batch_size=None, num_workers=args.workers)
            stream = iter(loader)
            featinv_pass(stream, summary.written, args.batch)  # start-up and warm-up
            start = time.perf_counter()
            count = featinv_pass(stream, 4 * summary.written, args.batch)
            many = count / (time.perf_counter() - start)
            print(
                f"featinv WebLoader ({args.workers} workers):     {many:7.1f} img/s "
                f"({many / args.workers:.1f} per worker, on {os.cpu_count()} cores)"
            )


if __name__ == "__main__":
    main()
