"""Training-step throughput of the paper-scale HOG and AlexNet fc6 inverters (img/s).

    python benchmarks/train_step_speed.py [--batch 64] [--steps 5] [--device cuda]
                                          [--precision bf16-mixed] [--channels-last]

Builds each network exactly as the paper-scale commands do (``configs/imagenet.yaml`` then
``configs/hog.yaml``, or ``configs/alexnet.yaml`` at layer fc6; random AlexNet weights: speed
does not depend on them) and times full optimizer steps on a fixed batch of real photo crops,
uint8 as the loader ships them: pixel conversion (what the data module does after the
transfer), features on the device, decoder forward, MSE, backward and Adam. Data loading is
not included (see ``loader_speed.py``). Prints img/s per network and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine, photo_crops

from featinv.cli.train import build_cli
from featinv.data.images import pixels_to_float
from featinv.training import InversionModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: each network's command-line arguments after ``--config configs/imagenet.yaml``
NETWORKS = {
    "hog": [f"--config={CONFIGS / 'hog.yaml'}"],
    "fc6": [
        f"--config={CONFIGS / 'alexnet.yaml'}",
        "--model.representation_options.layer=fc6",
        "--model.representation_options.weights=random",
    ],
}


def build(arguments: list[str], channels_last: bool) -> tuple[InversionModule, int]:
    """The module the paper-scale command trains and its image size."""
    cli = build_cli(
        [
            f"--config={CONFIGS / 'imagenet.yaml'}",
            *arguments,
            f"--model.channels_last={str(channels_last).lower()}",
            "--trainer.logger=false",
        ],
        run=False,
    )
    return cli.model, cli.datamodule.hparams.image_size


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(
    module: InversionModule,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    bf16: bool,
) -> None:
    """One optimizer step, as Lightning runs it under the given precision."""
    optimizer.zero_grad(set_to_none=True)
    images = pixels_to_float(batch["image"])
    with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
        loss = module.reconstruction_loss({**batch, "image": images})
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on GPU, 8 on CPU")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up)")
    parser.add_argument("--precision", default=None, choices=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch_size = args.batch or (64 if device.type == "cuda" else 8)
    precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32-true")
    print(f"machine: {describe_machine()}")
    print(
        f"device {device}, batch {batch_size}, {precision}, channels_last {args.channels_last}, "
        f"{args.steps} timed steps after 2 warm-up"
    )
    for name in args.networks:
        module, size = build(NETWORKS[name], args.channels_last)
        module = module.to(device).train()
        module.configure_model()
        crops = photo_crops(batch_size, size)
        batch = {"image": torch.from_numpy(crops).permute(0, 3, 1, 2).to(device)}
        optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], 1e-3)

        bf16 = precision == "bf16-mixed"
        for _ in range(2):
            step(module, optimizer, batch, bf16)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step(module, optimizer, batch, bf16)
        synchronize(device)
        seconds = (time.perf_counter() - start) / args.steps
        params = sum(p.numel() for p in module.decoder.parameters()) / 1e6
        print(
            f"{name:4s} {size}px decoder {params:6.1f} M params: {batch_size / seconds:8.1f} img/s "
            f"({seconds * 1e3:.0f} ms/step)"
        )


if __name__ == "__main__":
    main()
