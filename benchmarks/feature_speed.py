"""Feature throughput on each device: HOG, LBP and AlexNet, as computed inside a training step.

    python benchmarks/feature_speed.py [--batch 64] [--size 256] [--threads 2] [--repeats 5]

Times the representation alone on a batch of real photo crops already on the device (the
training step's features: ``InversionModule.features``), for the CPU and, when present, the
GPU. Prints img/s per representation and device, and the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import best_time, feature_benchmark_args, photo_crops

from featinv.representations import build_representation

REPRESENTATIONS = {
    "HOG (cell 8)": ("hog", {}, None),
    "LBP (cell 16)": ("lbp", {}, None),
    "AlexNet conv5": ("alexnet", {"layer": "conv5", "weights": "random"}, 227),
    "AlexNet fc8": ("alexnet", {"layer": "fc8", "weights": "random"}, 227),
}


def main() -> None:
    args = feature_benchmark_args(__doc__)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"timing: best of {args.repeats} runs after a warm-up; AlexNet at 227 px")
    for name, (registered, options, size) in REPRESENTATIONS.items():
        crops = photo_crops(args.batch, size or args.size)
        images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255)
        phi = build_representation(registered, **options).eval()
        for device in devices:
            on_device, phi_device = images.to(device), phi.to(device)

            def run(x: torch.Tensor = on_device, f: torch.nn.Module = phi_device) -> None:
                f(x)
                if x.is_cuda:
                    torch.cuda.synchronize()

            with torch.inference_mode():
                seconds = best_time(run, args.repeats)
            label = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
            print(f"{name:15s} {label:28s} {args.batch / seconds:9.1f} img/s")


if __name__ == "__main__":
    main()
