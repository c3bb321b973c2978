"""Training cost of each loss (MSE, + feature loss, DeePSiM) on one model, as ratios.

    python benchmarks/loss_speed.py [--batches 30] [--device cuda] [--model-config PATH]

Builds the module as ``python train.py`` would (the embedded default, or the given model
config: e.g. ``configs/alexnet.yaml`` with random weights through
``--set model.representation_options.weights=random``), once per loss config, and times
Lightning fitting the same fixed batches of real photo crops: features, decoder, every loss
term, and with the adversarial term the discriminator's step too (manual optimization, two
Adam optimizers). Data loading and validation are left out. Prints ms per batch and each
loss's cost relative to MSE alone, measured in the same process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine, photo_crops

from featinv.cli.train import build_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LOSSES = {
    "mse": [],
    "+feature": [f"--config={CONFIGS / 'losses' / 'feature.yaml'}"],
    "deepsim": [f"--config={CONFIGS / 'losses' / 'deepsim.yaml'}"],
}


def seconds_per_batch(arguments: list[str], batches: int, device: str, batch_size: int) -> float:
    """Wall seconds per training batch of the module these arguments build."""
    cli = build_cli([*arguments, "--trainer.logger=false"], run=False)
    module, size = cli.model, cli.datamodule.hparams.image_size
    crops = torch.from_numpy(photo_crops(batch_size, size)).permute(0, 3, 1, 2).float() / 255
    steps_per_batch = 1 if module.automatic_optimization else 2  # Lightning counts optimizers
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args: object) -> None:
            times.append(time.perf_counter())

    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        max_steps=(batches + 2) * steps_per_batch,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Clock()],
    )
    trainer.fit(module, DataLoader([{"image": crops}] * (batches + 2), batch_size=None))
    return (times[-1] - times[1]) / (len(times) - 2)  # after 1 warm-up batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=30, help="timed batches per loss")
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model-config", default=None, help="a model config (default: embedded)")
    parser.add_argument("--set", nargs="*", default=[], help="extra options, e.g. model.lr=1e-4")
    args = parser.parse_args()
    base = [f"--config={args.model_config}"] if args.model_config else []
    base += [f"--{option}" for option in args.set]
    print(f"machine: {describe_machine()}")
    print(f"device {args.device}, batch {args.batch}, {args.batches} timed batches per loss")
    reference = None
    for name, arguments in LOSSES.items():
        seconds = seconds_per_batch([*base, *arguments], args.batches, args.device, args.batch)
        reference = reference or seconds
        print(
            f"{name:9s} {seconds * 1e3:7.1f} ms/batch  {args.batch / seconds:7.1f} img/s  "
            f"x{seconds / reference:.2f} of MSE"
        )


if __name__ == "__main__":
    main()
