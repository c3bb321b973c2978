"""What a training run is given besides the module: callbacks and the checkpoint writer.

* ``DataFaultCounter``: corrupt samples and shard errors skipped by the loaders, summed over
  workers and DDP processes (every ``InversionModule`` run has it).
* ``ReconstructionGrid``: ``val_grid.png`` after each validation (original | reconstruction).
* ``RunSummary``: the end-of-run summary (validation figures of the best checkpoint next to
  their honest baselines, data faults, wall time, memory).
* ``AtomicCheckpointIO``: checkpoints written to a temporary file and renamed into place.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from featinv.figures import comparison_grid
from featinv.reliability import CheckpointWriteError, atomic_write
from featinv.training.budget import TimeBudget
from featinv.training.divergence import DivergenceGuard

STAGES = ("train", "val")


class DataFaultCounter(Callback):
    """Log the data faults the loaders skipped, as ``{stage}/skipped_samples`` and
    ``{stage}/shard_errors``, summed over loader workers and DDP processes.

    Each batch carries its worker's running counts (``worker``, ``skipped``,
    ``shard_errors``); the latest count per worker is kept, and at each epoch's end every
    process logs its sum with ``reduce_fx="sum"`` (each process reads other shards).
    """

    def __init__(self) -> None:
        #: stage -> worker -> (corrupt samples skipped, shard errors), each worker's latest
        self.seen: dict[str, dict[int, tuple[int, int]]] = {stage: {} for stage in STAGES}

    def counts(self, stage: str) -> tuple[int, int]:
        """This process's (corrupt samples, shard errors) of ``stage`` so far."""
        seen = self.seen[stage].values()
        return sum(s for s, _ in seen), sum(e for _, e in seen)

    def _track(self, batch: Any, stage: str) -> None:
        if isinstance(batch, dict) and "skipped" in batch:
            worker = int(batch.get("worker", 0))
            self.seen[stage][worker] = (int(batch["skipped"]), int(batch.get("shard_errors", 0)))

    def _log(self, module: L.LightningModule, stage: str) -> None:
        skipped, errors = self.counts(stage)
        for name, count in (("skipped_samples", skipped), ("shard_errors", errors)):
            module.log(f"{stage}/{name}", float(count), reduce_fx="sum", sync_dist=True)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._track(batch, "train")

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._track(batch, "val")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, "train")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen["val"] = {}  # each validation pass counts from zero

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, "val")


class ReconstructionGrid(Callback):
    """After each validation, write ``val_grid.png`` (original | reconstruction) and log it.

    The PNG goes next to the checkpoints; with a wandb logger the grid is also logged as an
    image, so runs can be compared by eye.
    """

    def __init__(self, filename: str = "val_grid.png") -> None:
        self.filename = filename
        self.last_path: Path | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples = getattr(pl_module, "val_examples", None)
        if examples is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        grid = comparison_grid(examples, ["original", "reconstruction"])
        folder = Path(run_folder(trainer))
        folder.mkdir(parents=True, exist_ok=True)
        self.last_path = folder / self.filename
        grid.save(self.last_path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image("val/reconstructions", [grid], step=trainer.global_step)


def run_folder(trainer: L.Trainer) -> str:
    """Where a run's files go: the checkpoint folder, else the trainer's root folder."""
    callback = trainer.checkpoint_callback
    return (callback.dirpath if callback is not None else None) or trainer.default_root_dir


#: (label, metric) rows of the summary's validation block, in order.
REPORT_ROWS = (
    ("validation normalized error (best checkpoint)", "normalized_error"),
    ("  the training data's mean image (honest constant baseline)", "train_mean_image_error"),
    ("  the validation set's own mean image (oracle)", "mean_image_error"),
    ("structure error (each reconstruction's mean colour moved to the photo's)", "structure_error"),
    ("feature error, ||Phi(x_hat) - Phi(x)|| / ||Phi(x)||", "feature_error"),
    ("sharpness, gradient magnitude over the photo's (1.0: as sharp)", "sharpness"),
    ("colour cast, |mean colour - photo's|, 0-1 scale", "colour_cast"),
    ("  the training data's mean colour", "train_mean_colour_cast"),
    ("  the best constant colour for the set (oracle)", "constant_colour_cast"),
)


def validation_report(metrics: dict[str, Any]) -> list[str]:
    """Summary lines for the validation figures in ``metrics`` (the ones present)."""
    lines = [
        f"{label}: {float(metrics[f'val/{name}']):.4f}"
        for label, name in REPORT_ROWS
        if f"val/{name}" in metrics
    ]
    if "val/blended_distance" in metrics and "val/normalizer" in metrics:
        blended = float(metrics["val/blended_distance"]) / float(metrics["val/normalizer"])
        lines.insert(
            1,
            f"  blended toward the training data's mean image (weight "
            f"{float(metrics['val/prior_blend_weight']):.2f}, as Inverter and evaluate.py "
            f"apply it): {blended:.4f}",
        )
    return lines


class RunSummary(Callback):
    """The closing summary of ``featinv-train``: what the run produced and how it went.

    It times the fit and keeps the last metrics of the fit; ``lines`` then formats them with
    the metrics of the best checkpoint's own validation (the command line validates
    ``best.ckpt`` once more after fit, so that every figure describes the file users keep).
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.elapsed = 0.0
        self.last: dict[str, Any] = {}
        self.files: list[str] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.elapsed = time.perf_counter() - (self.started or time.perf_counter())
        self.last = dict(trainer.callback_metrics)
        # Now, not later: validating a checkpoint afterwards restores the callbacks' state
        # saved in it, which predates the last checkpoint.
        checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
        self.files = [f"best checkpoint: {c.best_model_path}" for c in checkpoints if c.monitor]
        self.files += [
            f"last checkpoint: {c.last_model_path} (resume: --ckpt_path last)"
            for c in checkpoints
            if c.last_model_path
        ]

    def lines(self, trainer: L.Trainer, best: dict[str, Any] | None) -> list[str]:
        """The summary: validation figures (of ``best`` if given), files, faults, costs."""
        last, best = self.last, best or self.last
        lines = ["", "== featinv training summary"]
        if "val/normalized_error" in last:
            error = float(last["val/normalized_error"])
            lines.append(f"validation normalized error (last): {error:.4f}")
        lines += validation_report(best)
        lines += self.files
        for stage, metrics in (("train", last), ("val", best)):
            skipped = int(metrics.get(f"{stage}/skipped_samples", 0))
            errors = int(metrics.get(f"{stage}/shard_errors", 0))
            if skipped or errors:
                lines.append(
                    f"{stage} data: {skipped} corrupt sample(s), {errors} shard error(s) skipped"
                )
        nonfinite = getattr(trainer.lightning_module, "skipped_nonfinite", 0)
        if nonfinite:
            lines.append(f"batches skipped for a non-finite loss: {nonfinite}")
        lines += [
            f"reconstruction grid: {c.last_path}"
            for c in trainer.callbacks
            if isinstance(c, ReconstructionGrid) and c.last_path is not None
        ]
        lines += [
            line
            for c in trainer.callbacks
            if isinstance(c, TimeBudget) and (line := c.summary(trainer)) is not None
        ]
        lines += [
            line
            for c in trainer.callbacks
            if isinstance(c, DivergenceGuard) and (line := c.summary()) is not None
        ]
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines.append(f"wall time: {self.elapsed / 60:.1f} min")
        lines.append(
            f"peak memory: {own:.0f} MiB (main process), {workers:.0f} MiB (largest worker)"
        )
        return lines


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename it into place.

    A crash (or a full disk, or SIGKILL) during a save leaves the previous checkpoint intact
    and loadable: the rename is atomic on POSIX file systems, so ``last.ckpt`` is always
    either the old complete file or the new complete file, never a partial one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        try:
            with atomic_write(path) as stream:
                torch.save(checkpoint, stream)
        except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
            raise CheckpointWriteError(
                f"could not write the checkpoint {path} ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else 'no message'}); is the disk "
                "full or the folder not writable? The previous checkpoint is intact"
            ) from None
