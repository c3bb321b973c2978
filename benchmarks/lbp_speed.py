"""Torch LBP against scikit-image's ``local_binary_pattern`` on the same images, same process.

    python benchmarks/lbp_speed.py [--batch 64] [--size 256] [--threads 2] [--repeats 5]

scikit-image computes per-pixel codes only (P=8, R=1, "nri_uniform"; its sampling differs
from VLFeat's, see the spec); torch computes VLFeat's codes *and* the 58-bin cell histograms.
Prints ms per image and the ratio (skimage time / torch time: above 1 means torch is faster).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import best_time, feature_benchmark_args, photo_crops, print_gpu_figure

from featinv.ops import rgb_to_grey
from featinv.representations import LBP


def main() -> None:
    args = feature_benchmark_args(__doc__)
    images = torch.from_numpy(photo_crops(args.batch, args.size)).permute(0, 3, 1, 2).float() / 255
    lbp = LBP()
    with torch.inference_mode():
        torch_s = best_time(lambda: lbp(images), args.repeats) / args.batch
    print(f"torch LBP, codes + histograms (CPU): {torch_s * 1e3:7.3f} ms/image")

    from skimage.feature import local_binary_pattern

    # uint8 is scikit-image's recommended (and its fastest) input for LBP.
    grey = (rgb_to_grey(images)[:, 0] * 255).round().to(torch.uint8).numpy()

    def skimage_all() -> None:
        for image in grey:
            local_binary_pattern(image, 8, 1, method="nri_uniform")

    sk_s = best_time(skimage_all, args.repeats) / args.batch
    print(f"skimage local_binary_pattern, codes only: {sk_s * 1e3:7.3f} ms/image")
    print(f"speed ratio torch/skimage: {sk_s / torch_s:.2f}x  (1.0 = as fast as skimage)")

    print_gpu_figure("torch LBP", lbp, images, args.repeats)


if __name__ == "__main__":
    main()
