"""Torch HOG against dlib's FHOG (pyfhog) on the same images, in the same process.

    python benchmarks/hog_speed.py [--batch 64] [--size 256] [--threads 2] [--repeats 5]

Prints milliseconds per image for both and their ratio (dlib time / torch time: above 1 means
torch is faster). The images are real photos (random crops of the bundled photos). Where a
GPU is present, the torch figure on the GPU is printed too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import best_time, describe_machine, photo_crops

from featinv.representations import HOG


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    crops = photo_crops(args.batch, args.size)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255)
    hog = HOG()
    print(f"machine: {describe_machine()}")
    print(f"batch {args.batch} x {args.size}x{args.size}, {args.threads} torch threads")
    print(f"timing: best of {args.repeats} runs after a warm-up")

    with torch.inference_mode():
        torch_s = best_time(lambda: hog(images), args.repeats) / args.batch
    print(f"torch HOG (CPU):   {torch_s * 1e3:7.3f} ms/image")

    try:
        import pyfhog
    except ImportError:
        print("pyfhog not installed (pip install pyfhog): no dlib reference")
        return
    # dlib computes from the colour image's largest-gradient channel; give it the same grey input.
    grey = (np.einsum("nhwc,c->nhw", crops.astype(np.float32), [0.2989, 0.587, 0.114])).round()
    grey = np.ascontiguousarray(np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=3))

    def dlib_all() -> None:
        for image in grey:
            pyfhog.extract_fhog_features(image)

    dlib_s = best_time(dlib_all, args.repeats) / args.batch
    print(f"dlib FHOG (C++):   {dlib_s * 1e3:7.3f} ms/image")
    print(f"speed ratio torch/dlib: {dlib_s / torch_s:.2f}x  (1.0 = as fast as dlib)")

    if torch.cuda.is_available():
        gpu_images = images.cuda()
        hog_gpu = hog.cuda()

        def on_gpu() -> None:
            hog_gpu(gpu_images)
            torch.cuda.synchronize()

        with torch.inference_mode():
            gpu_s = best_time(on_gpu, args.repeats) / args.batch
        print(f"torch HOG ({torch.cuda.get_device_name(0)}): {gpu_s * 1e3:7.3f} ms/image")


if __name__ == "__main__":
    main()
