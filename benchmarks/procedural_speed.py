"""Procedural dead-leaves images against decoding and cropping a photo, same process.

    python benchmarks/procedural_speed.py [--size 64] [--count 200] [--repeats 3]

A loader worker either decodes a JPEG from a shard and crops it (the shard path) or paints a
dead-leaves image (``featinv.data.procedural``). Prints images per second of each, one worker's
work on one core, and the ratio: below 1 means a procedural image costs more than a photo, so
``data.synthetic_fraction`` adds loader work that more workers must absorb.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import best_time, describe_machine

from featinv.data.bundled import TRAIN_PHOTOS, photo_path
from featinv.data.images import decode_rgb, encode_image, resize_shorter_side
from featinv.data.procedural import DeadLeaves, TextureBank
from featinv.data.transforms import TrainTransform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader worker's view
    photos = [decode_rgb(photo_path(name)) for name in TRAIN_PHOTOS]
    bank = TextureBank.from_images(photos)
    # the bundled shards store JPEGs of 256-pixel photos; the default crops 1/4 to all of them
    jpegs = [encode_image(resize_shorter_side(p, 256)) for p in photos]
    transform = TrainTransform(args.size, seed=0, crop_scale=(0.25, 1.0))
    generator = DeadLeaves(args.size, bank)
    rng = np.random.default_rng(0)

    def photo_path_work() -> None:
        for i in range(args.count):
            transform.crop(decode_rgb(jpegs[i % len(jpegs)]))

    def procedural_work() -> None:
        for _ in range(args.count):
            generator(rng)

    photo_s = best_time(photo_path_work, args.repeats) / args.count
    procedural_s = best_time(procedural_work, args.repeats) / args.count
    print(describe_machine())
    print(f"photo (decode 256-px JPEG, random crop to {args.size}): {1 / photo_s:8.0f} img/s")
    print(f"procedural dead leaves at {args.size} px:               {1 / procedural_s:8.0f} img/s")
    print(f"ratio procedural/photo: {photo_s / procedural_s:.2f}x  (1.0 = as fast as a photo)")


if __name__ == "__main__":
    main()
