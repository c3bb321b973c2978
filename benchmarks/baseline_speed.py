"""Seconds per image of the optimization baseline, batch 1 against batch 8, same process.

    python benchmarks/baseline_speed.py [--iterations 300] [--threads 2] [--device cpu]

Cases: HOG at 128 and 256 pixels, AlexNet (CaffeNet, random weights: speed does not depend
on the weights) conv3 at 227. Each inverts real photo crops with the paper's 300 iterations
(Mahendran & Vedaldi report about 60 s per image on a CPU and 6 s on a GPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine, photo_crops

from featinv.baseline import OptimizationInverter
from featinv.representations import HOG, AlexNet

CASES = [("HOG", 128), ("HOG", 256), ("AlexNet conv3", 227)]


def seconds_per_image(inverter: OptimizationInverter, images: torch.Tensor) -> float:
    if images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    inverter.invert(images, progress=False)
    if images.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / images.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {describe_machine()}; device {args.device}; {args.iterations} iterations")
    print(f"{'case':<22}{'batch 1 s/img':>15}{'batch 8 s/img':>15}{'speed-up':>10}")
    for name, size in CASES:
        phi = HOG() if name == "HOG" else AlexNet("conv3", weights="random")
        inverter = OptimizationInverter(phi, iterations=args.iterations)
        images = torch.from_numpy(photo_crops(8, size)).permute(0, 3, 1, 2).float() / 255
        images = images.to(args.device)
        OptimizationInverter(phi, iterations=2).invert(images[:1], progress=False)  # warm-up
        one = seconds_per_image(inverter, images[:1])
        eight = seconds_per_image(inverter, images)
        print(f"{f'{name} {size}px':<22}{one:>15.2f}{eight:>15.2f}{one / eight:>9.1f}x", flush=True)


if __name__ == "__main__":
    main()
