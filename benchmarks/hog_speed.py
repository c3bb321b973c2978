"""Torch HOG against dlib's FHOG (pyfhog) on the same images, in the same process.

    python benchmarks/hog_speed.py [--batch 64] [--size 256] [--threads 2] [--repeats 5]
                                   [--rounds 5]

Prints milliseconds per image for both and their ratio (dlib time / torch time: above 1 means
torch is faster), in ``--rounds`` rounds that alternate the two (each the best of
``--repeats`` runs), then the median ratio. dlib runs on one thread, as it does; torch on
``--threads``. The images are real photos (random crops of the bundled photos). Where a GPU
is present, the torch figure on the GPU is printed too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import best_time, feature_benchmark_args, photo_crops, print_gpu_figure

from featinv.representations import HOG


def main() -> None:
    args = feature_benchmark_args(__doc__)
    crops = photo_crops(args.batch, args.size)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255)
    hog = HOG()
    print(f"timing: best of {args.repeats} runs after a warm-up")

    try:
        import pyfhog
    except ImportError:
        pyfhog = None
        print("pyfhog not installed (pip install pyfhog): no dlib reference")
    # dlib computes from the colour image's largest-gradient channel; give it the same grey input.
    grey = (np.einsum("nhwc,c->nhw", crops.astype(np.float32), [0.2989, 0.587, 0.114])).round()
    grey = np.ascontiguousarray(np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=3))

    def dlib_all() -> None:
        for image in grey:
            pyfhog.extract_fhog_features(image)

    ratios = []
    for round_ in range(args.rounds):
        with torch.inference_mode():
            torch_s = best_time(lambda: hog(images), args.repeats) / args.batch
        line = f"round {round_ + 1}: torch HOG (CPU) {torch_s * 1e3:7.3f} ms/image"
        if pyfhog is not None:
            dlib_s = best_time(dlib_all, args.repeats) / args.batch
            ratios.append(dlib_s / torch_s)
            line += f", dlib FHOG (C++) {dlib_s * 1e3:7.3f} ms/image, ratio {ratios[-1]:.2f}x"
        print(line, flush=True)
    if ratios:
        print(
            f"speed ratio torch/dlib, median of {len(ratios)} rounds: "
            f"{float(np.median(ratios)):.2f}x  (1.0 = as fast as dlib)"
        )

    print_gpu_figure("torch HOG", hog, images, args.repeats)


if __name__ == "__main__":
    main()
