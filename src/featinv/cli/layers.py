"""``featinv-layers``: the layer sweep, one command.

For each layer of a network it trains a decoder with the embedded default (``python
train.py``, its own process) within a CPU budget in minutes, then scores the decoders, the
optimization baseline and hybrid refinement on the same photos with ``evaluate.py``:
``layers.png`` (error against depth, one curve per method), ``report.md`` / ``report.json``
(normalized, structure and feature error, s / image), and ``sweep.md`` with each layer's
training time, steps and best validation error. Decoders already trained in ``--out`` are
reused, so an interrupted sweep goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from featinv.checkpoint import load_checkpoint
from featinv.cli import evaluate
from featinv.cli.common import CommandError, console_script, int_at_least, reported
from featinv.reliability import write_json

PROG = "featinv-layers"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a decoder per layer within a time budget, then score learned, "
        "optimization and hybrid inversion on the same photos.",
    )
    parser.add_argument("--architecture", default="vgg16", help="built-in name or import path")
    parser.add_argument("--weights", required=True, help="the network's weights file")
    parser.add_argument("--layers", nargs="+", required=True, help="layers, shallow to deep")
    parser.add_argument(
        "--minutes", type=float, default=13.0, help="training budget per layer (wall time)"
    )
    parser.add_argument("--out", default="layers", help="output folder")
    parser.add_argument(
        "--num-images", type=int_at_least(2), default=16, help="photos scored per method"
    )
    parser.add_argument("--images", help="a folder of photos to score on (default: bundled)")
    parser.add_argument(
        "--baseline-iterations", type=int_at_least(1), default=300, help="Algorithm 1's T"
    )
    parser.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="one more argument for every training run (repeatable), e.g. "
        "--train-arg=--config=configs/imagenet.yaml",
    )
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")
    return args


def best_checkpoint(out: Path, layer: str) -> Path:
    return out / "checkpoints" / layer / "cnn" / "best.ckpt"


def train_layer(args: argparse.Namespace, layer: str) -> dict[str, Any]:
    """Train one layer's decoder in its own process; its wall time, steps and best error."""
    out = Path(args.out)
    best = best_checkpoint(out, layer)
    facts_path = best.parent / "sweep.json"
    if best.is_file() and facts_path.is_file():
        print(f"{layer}: trained already ({best})", flush=True)
        return json.loads(facts_path.read_text())
    if not Path(args.weights).is_file():
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    options = {"architecture": args.architecture, "layer": layer, "weights": args.weights}
    command = [
        sys.executable,
        "-c",
        "from featinv.cli import main; main()",
        "fit",
        *args.train_arg,  # first, so that a --config among them does not undo the sweep's own
        "--model.representation=cnn",
        f"--model.representation_options={json.dumps(options)}",
        f"--budget.minutes={args.minutes}",
        f"--checkpoint_dir={out / 'checkpoints' / layer}",
        "--trainer.logger=false",
    ]
    print(f"{layer}: training, at most {args.minutes:g} minutes", flush=True)
    started = time.monotonic()
    finished = subprocess.run(command, check=False)
    seconds = time.monotonic() - started
    if finished.returncode != 0 or not best.is_file():
        raise CommandError(
            f"training {layer} failed (exit status {finished.returncode}); its command: "
            + " ".join(command)
        )
    checkpoint = load_checkpoint(best)
    last = best.with_name("last.ckpt")
    steps = load_checkpoint(last)["global_step"] if last.is_file() else checkpoint["global_step"]
    monitor = next(
        (v for k, v in checkpoint.get("callbacks", {}).items() if "normalized_error" in k), {}
    )
    score = monitor.get("best_model_score")
    facts = {
        "layer": layer,
        "train_seconds": round(seconds, 1),
        "steps": int(steps),
        "best_validation_error": None if score is None else float(score),
    }
    write_json(facts_path, facts)
    return facts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with reported(PROG):
        trained = [train_layer(args, layer) for layer in args.layers]
    out = Path(args.out)
    command = [
        *(f"--checkpoint={best_checkpoint(out, layer)}" for layer in args.layers),
        f"--architecture={args.architecture}",  # the network the user named, not a file's
        "--baseline",
        "--hybrid",
        f"--num-images={args.num_images}",
        f"--baseline-iterations={args.baseline_iterations}",
        f"--out={out}",
    ]
    if args.images:
        command.append(f"--images={args.images}")
    report = evaluate.main(command)
    lines = [
        f"# Layer sweep: {args.architecture}, {args.weights}",
        "",
        f"Training budget {args.minutes:g} minutes per layer (wall time, this machine).",
        "",
        "| layer | training minutes | steps | best validation error |",
        "|---|---|---|---|",
    ]
    for facts in trained:
        error = facts["best_validation_error"]
        lines.append(
            f"| {facts['layer']} | {facts['train_seconds'] / 60:.1f} | {facts['steps']} "
            f"| {'n/a' if error is None else f'{error:.3f}'} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    write_json(out / "sweep.json", {"training": trained, "evaluation": report})
    print("\n".join(lines))
    print(f"wrote {out}/sweep.md, sweep.json, report.md, layers.png, grid.png")
    return {"training": trained, "evaluation": report}


#: the ``[project.scripts]`` entry point
console_main = console_script(main)
