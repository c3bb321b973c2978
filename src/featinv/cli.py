"""``python train.py`` / ``featinv-train``: LightningCLI over the inversion module and data.

With no arguments it runs the embedded default: the HOG decoder on the bundled photos, sized
for a 2-core CPU. Paper-scale settings live in ``configs/`` (``--config configs/hog.yaml``).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from featinv.data.datamodule import InversionDataModule
from featinv.reliability import AtomicCheckpointIO, NonFiniteLossError, OptionError
from featinv.training import InversionModule, ReconstructionGrid

SUBCOMMANDS = {"fit", "validate", "test", "predict"}

#: The embedded default's decoder, tuned for 64-pixel crops on 2 CPU cores: HOG is 8x8 there,
#: and an 8x8 bottleneck (no contraction) learns far faster than the paper's 1/64 contraction,
#: which at this size would be 1x1 (measured: 0.57 vs 0.73 normalized error after 1100 steps
#: at 4x4). configs/hog.yaml restores the paper's architecture for 256-pixel ImageNet crops.
DECODER_DEFAULTS: dict[str, Any] = {
    "width": 128,
    "max_width": 256,
    "min_width": 32,
    "min_bottleneck": 8,
    "convs_per_level": 1,
}

#: The embedded default's data: the bundled photos plus procedural images, with the colour
#: handling a colourless representation needs (README, "The embedded default: generalizing
#: from a few photos"). Configs for other data set their own values.
DATA_DEFAULTS: dict[str, Any] = {
    "crop_scale": [0.25, 1.0],
    "synthetic_fraction": 0.5,
    "saturation": [0.0, 1.0],
    # ImageNet's mean colour (the normalization constants of torchvision's models)
    "colour_prior": [0.485, 0.456, 0.406],
    "seed": 0,
}

#: The embedded default's trainer: 3000 steps on CPU, wandb offline.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 30,
    "accelerator": "auto",
    "devices": 1,
    "precision": "32-true",
    "log_every_n_steps": 10,
    "logger": {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"project": "featinv", "save_dir": "logs", "offline": True},
    },
}


class FeatinvCLI(LightningCLI):
    """LightningCLI with the image size shared by model and data and a closing summary."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.image_size", "model.image_size")
        # SIFT runs in the loader workers: the data module must know the representation.
        parser.link_arguments("model.representation", "data.representation")
        parser.link_arguments("model.representation_options", "data.representation_options")
        # Always-present callbacks, configurable as --checkpoint.*, --resume_checkpoint.* and
        # --grid.*: best.ckpt follows the validation error; last.ckpt is written for resuming
        # (every epoch, or every N steps), whether or not a validation has run yet.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "resume_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.filename": "best",
                "checkpoint.monitor": "val/normalized_error",
                "checkpoint.mode": "min",
                "checkpoint.save_last": False,
                "resume_checkpoint.save_top_k": 0,
                "resume_checkpoint.save_last": True,
                "model.decoder_options": DECODER_DEFAULTS,
                **{f"data.{key}": value for key, value in DATA_DEFAULTS.items()},
            }
        )
        parser.add_lightning_class_args(ReconstructionGrid, "grid")
        parser.add_argument(
            "--checkpoint_dir",
            default="checkpoints",
            help="checkpoints go to CHECKPOINT_DIR/<representation>/ (best.ckpt, last.ckpt)",
        )

    def before_fit(self) -> None:
        self._started = time.perf_counter()
        try:
            self.datamodule.check_sources()
        except FileNotFoundError as error:
            sys.exit(f"featinv-train: error: {error}")
        folder = (
            Path(self.config[self.subcommand].checkpoint_dir) / self.model.hparams.representation
        )
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(folder)
        # A crash or a kill during a save must leave the previous checkpoint loadable.
        self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def after_fit(self) -> None:
        elapsed = time.perf_counter() - self._started
        checkpoint = self.trainer.checkpoint_callback
        last = dict(self.trainer.callback_metrics)
        best = None
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            # Every figure of the summary describes best.ckpt, the file users go on with (its
            # grid too): validate it once more, on every process, as DDP requires.
            self.trainer.validate(
                self.model,
                datamodule=self.datamodule,
                ckpt_path=checkpoint.best_model_path,
                verbose=False,
            )
            best = self.trainer.callback_metrics
        if not self.trainer.is_global_zero:
            return
        lines = ["", "== featinv training summary"]
        if "val/normalized_error" in last:
            lines.append(
                f"validation normalized error (last): {float(last['val/normalized_error']):.4f}"
            )
        lines += validation_report(best if best is not None else last)
        if isinstance(checkpoint, ModelCheckpoint):
            lines.append(f"best checkpoint: {checkpoint.best_model_path}")
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.last_model_path:
                lines.append(
                    f"last checkpoint: {callback.last_model_path} (resume: --ckpt_path last)"
                )
        for stage in ("train", "val"):
            # summed over loader workers and processes at the end of each epoch
            metrics = last if stage == "train" else (best or last)
            skipped = int(metrics.get(f"{stage}/skipped_samples", 0))
            errors = int(metrics.get(f"{stage}/shard_errors", 0))
            if skipped or errors:
                lines.append(
                    f"{stage} data: {skipped} corrupt sample(s), {errors} shard error(s) skipped"
                )
        if self.model.skipped_nonfinite:
            lines.append(f"batches skipped for a non-finite loss: {self.model.skipped_nonfinite}")
        for callback in self.trainer.callbacks:
            if isinstance(callback, ReconstructionGrid) and callback.last_path is not None:
                lines.append(f"reconstruction grid: {callback.last_path}")
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines.append(f"wall time: {elapsed / 60:.1f} min")
        lines.append(
            f"peak memory: {own:.0f} MiB (main process), {workers:.0f} MiB (largest worker)"
        )
        print("\n".join(lines), flush=True)


def validation_report(metrics: dict[str, Any]) -> list[str]:
    """Summary lines for the validation figures in ``metrics`` (the ones present)."""

    def figure(name: str) -> str | None:
        value = metrics.get(f"val/{name}")
        return None if value is None else f"{float(value):.4f}"

    rows = [
        ("validation normalized error (best checkpoint)", "normalized_error"),
        ("  the training data's mean image (honest constant baseline)", "train_mean_image_error"),
        ("  the validation set's own mean image (oracle)", "mean_image_error"),
        ("colour cast, |mean colour - photo's|, 0-1 scale", "colour_cast"),
        ("  the training data's mean colour", "train_mean_colour_cast"),
        ("  the best constant colour for the set (oracle)", "constant_colour_cast"),
    ]
    return [f"{label}: {figure(name)}" for label, name in rows if figure(name) is not None]


def main(args: list[str] | None = None) -> None:
    """Entry point of ``train.py`` and ``featinv-train``; ``fit`` is implied."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["fit", *argv]
    try:
        FeatinvCLI(
            InversionModule,
            InversionDataModule,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            args=argv,
        )
    except NonFiniteLossError as error:
        sys.exit(f"featinv-train: stopped: {error}")
    except OptionError as error:
        sys.exit(f"featinv-train: error: {error}")


__all__ = ["FeatinvCLI", "main"]
