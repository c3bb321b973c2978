"""Where the time goes: the default run's training step and one optimization-baseline
iteration, per part, as shares of the whole measured in the same process.

    python benchmarks/step_profile.py [--steps 20] [--threads 2] [--baseline-size 128]

Default run (``python train.py``'s embedded config: HOG, 64 px crops, batch 32, its decoder):
a batch from the training loader computed in this process (bundled photos and procedural
images; a real run spreads this over its loader workers, on the same cores), pixels to float,
HOG, decoder forward and MSE, backward, Adam, and validation's cost per training step (one
validation pass over the bundled validation views, divided by the steps of an epoch).

Baseline (Mahendran & Vedaldi's Algorithm 1 as ``OptimizationInverter`` runs it, HOG, a batch
of 8 photo crops): Phi's forward pass, the loss, the backward pass through both, the prior's
value and written-out gradient, and the rest of an iteration (jitter, the optimizer, the
projection), the last taken as the whole iteration (timed through
``OptimizationInverter.invert``) minus the other parts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine, photo_crops

from featinv.baseline import OptimizationInverter
from featinv.baseline.regularizers import natural_image_prior, normalized_loss
from featinv.cli.train import build_cli
from featinv.data.images import pixels_to_float
from featinv.representations import HOG


def mean_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def print_parts(title: str, parts: dict[str, float]) -> None:
    total = sum(parts.values())
    print(f"\n{title}: {total * 1e3:.1f} ms in all")
    for name, seconds in parts.items():
        print(f"  {name:<34}{seconds * 1e3:9.2f} ms  {seconds / total:6.1%}")


def default_step(steps: int) -> dict[str, float]:
    cli = build_cli(["--trainer.logger=false", "--data.num_workers=0"], run=False)
    module, data = cli.model.train(), cli.datamodule
    data.setup("fit")
    loader = iter(data.train_dataloader())
    optimizer = torch.optim.Adam(module.decoder.parameters(), 1e-3)
    raw = next(loader)["image"]
    images = pixels_to_float(raw)
    features = module.features(images)

    parts = {"loader batch (in process)": mean_time(lambda: next(loader), steps)}
    parts["pixels to float"] = mean_time(lambda: pixels_to_float(raw), steps)
    parts["HOG features"] = mean_time(lambda: module.features(images), steps)

    def forward() -> torch.Tensor:
        return module.weighted(module.loss_terms(images, features, module.decoder(features)))

    parts["decoder forward + MSE"] = mean_time(forward, steps)
    losses = [forward() for _ in range(steps + 1)]
    parts["backward"] = mean_time(lambda: losses.pop().backward(), steps)
    parts["Adam step"] = mean_time(optimizer.step, steps)
    trainer = cli.trainer
    start = time.perf_counter()
    trainer.validate(module, datamodule=data, verbose=False)
    per_epoch = data.hparams.batches_per_epoch
    parts["validation, per training step"] = (time.perf_counter() - start) / per_epoch
    return parts


def baseline_iteration(size: int, iterations: int) -> dict[str, float]:
    phi = HOG()
    images = torch.from_numpy(photo_crops(8, size)).permute(0, 3, 1, 2).float().div(255)
    inverter = OptimizationInverter(phi, iterations=iterations)
    opts = inverter.options
    start = time.perf_counter()
    inverter.invert(images, progress=False)
    whole = (time.perf_counter() - start) / iterations
    with torch.no_grad():
        target = phi(images)
    x = (torch.randn_like(images) * 30).requires_grad_(True)
    height, width = images.shape[-2:]

    def features() -> torch.Tensor:
        return phi(x / 255.0 + 0.5)

    def loss() -> torch.Tensor:
        return normalized_loss(features(), target, None).sum() * (opts.c * height * width)

    parts = {"HOG forward": mean_time(features, iterations)}
    parts["loss"] = mean_time(loss, iterations) - parts["HOG forward"]
    losses = [loss() for _ in range(iterations + 1)]
    gradient = torch.zeros_like(x)
    parts["backward (HOG and loss)"] = mean_time(
        lambda: torch.autograd.grad(losses.pop(), x), iterations
    )
    parts["prior, value and gradient"] = mean_time(
        lambda: natural_image_prior(
            x.detach(),
            opts.alpha,
            opts.bound,
            opts.beta,
            opts.typical_gradient,
            grad_into=gradient,
            grad_scale=height * width,
        ),
        iterations,
    )
    parts["jitter, optimizer, projection"] = max(whole - sum(parts.values()), 0.0)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {describe_machine()}; {args.threads} torch threads")
    print_parts("default run, one training step", default_step(args.steps))
    print_parts(
        f"optimization baseline, one iteration (HOG, 8 x {args.baseline_size} px)",
        baseline_iteration(args.baseline_size, args.steps),
    )


if __name__ == "__main__":
    main()
