"""Feature throughput on each device: HOG, LBP, AlexNet and VGG-16 layers, as computed inside
a training step.

    python benchmarks/feature_speed.py [--batch 64] [--size 256] [--threads 2] [--repeats 5]

Times the representation alone on a batch of real photo crops already on the device (the
training step's features: ``InversionModule.features``), for the CPU and, when present, the
GPU. Prints img/s per representation and device, and the machine. VGG-16 rows (batch at most
8 on the CPU) also print the saving of stopping at the layer: the time of the whole network's
forward pass (to fc8) on the same batch, divided by the layer's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import feature_benchmark_args, photo_crops

from featinv.representations import build_representation

REPRESENTATIONS = {
    "HOG (cell 8)": ("hog", {}, None),
    "LBP (cell 16)": ("lbp", {}, None),
    "AlexNet conv5": ("alexnet", {"layer": "conv5", "weights": "random"}, 227),
    "AlexNet fc8": ("alexnet", {"layer": "fc8", "weights": "random"}, 227),
    "VGG-16 conv3_3": ("cnn", {"architecture": "vgg16", "layer": "conv3_3"}, 224),
    "VGG-16 conv5_3": ("cnn", {"architecture": "vgg16", "layer": "conv5_3"}, 224),
    "VGG-16 fc7": ("cnn", {"architecture": "vgg16", "layer": "fc7"}, 224),
}
#: the whole network, for the stop-at-layer saving
VGG16_FULL = {"architecture": "vgg16", "layer": "fc8", "weights": "random"}


def main() -> None:
    args = feature_benchmark_args(__doc__)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"timing: best of {args.repeats} runs after a warm-up; AlexNet 227 px, VGG 224 px")
    for name, (registered, options, size) in REPRESENTATIONS.items():
        vgg = registered == "cnn"
        batch = min(args.batch, 8) if vgg else args.batch
        crops = photo_crops(batch, size or args.size)
        images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255)
        if vgg:
            options = {**options, "weights": "random"}
        phi = build_representation(registered, **options).eval()
        for device in devices:
            on_device = images.to(device)
            label = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
            if not vgg:
                seconds = _time([phi.to(device)], on_device, args.repeats)[0]
                print(f"{name:15s} {label:28s} {batch / seconds:9.1f} img/s", flush=True)
                continue
            # the layer and the whole network, timed in alternation so that the machine's
            # load falls on both alike
            full = build_representation("cnn", **VGG16_FULL).eval().to(device)
            seconds, whole = _time([phi.to(device), full], on_device, args.repeats)
            print(
                f"{name:15s} {label:28s} {batch / seconds:9.1f} img/s  (batch {batch}; whole "
                f"network {batch / whole:.1f} img/s: stopping here is {whole / seconds:.2f}x "
                "faster)",
                flush=True,
            )


def _time(networks: list[torch.nn.Module], images: torch.Tensor, repeats: int) -> list[float]:
    """Best seconds of each network on ``images``, runs alternating, after a warm-up each."""
    best = [float("inf")] * len(networks)
    with torch.inference_mode():
        for network in networks:
            network(images)  # warm-up
        for _ in range(repeats):
            for i, network in enumerate(networks):
                start = time.perf_counter()
                network(images)
                if images.is_cuda:
                    torch.cuda.synchronize()
                best[i] = min(best[i], time.perf_counter() - start)
    return best


if __name__ == "__main__":
    main()
