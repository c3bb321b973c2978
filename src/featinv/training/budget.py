"""A wall-clock budget for a run: it ends at an epoch boundary in time, with its learning
rate decayed as if the number of steps that fit had been asked for.

A step costs what the representation costs: a HOG step is ten times cheaper than a VGG-16
conv5_3 step on a CPU, so a fixed number of steps is either too short for one or too long
for the other. With ``minutes`` set, the run measures its epochs (training and validation),
stops after the last epoch that fits, and keeps time for the re-validation of ``best.ckpt``
that ends every run. The learning-rate schedule (``featinv.training.options.linear_decay``)
follows the projected number of steps, so the decay of Sect. 2.2 ("we gradually decreased
the learning rate towards the end of training") still happens at the end.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from featinv.training.options import StepPlan

log = logging.getLogger(__name__)


class TimeBudget(Callback):
    """End training within ``minutes`` of wall time (``None``: no budget).

    Args:
        minutes: wall time from the start of training to the end of the run, the final
            re-validation included; ``None`` lets ``max_epochs`` / ``max_steps`` decide.
    """

    def __init__(self, minutes: float | None = None) -> None:
        if minutes is not None and not (isinstance(minutes, int | float) and minutes > 0):
            raise ValueError(f"budget.minutes must be a positive number or null, got {minutes!r}")
        self.minutes = minutes
        self.started: float | None = None
        self.epochs_timed = 0
        self.validation_seconds = 0.0
        self._validation_started: float | None = None
        #: the epochs the run was projected to end after (logged once when it shrinks)
        self.projected_epochs: int | None = None
        #: whether the budget, rather than max_epochs / max_steps, ended the run
        self.ended_run = False

    # ----------------------------------------------------------------------- measuring
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.monotonic()
        self.epochs_timed = 0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._validation_started is not None and not trainer.sanity_checking:
            took = time.monotonic() - self._validation_started
            self.validation_seconds = max(self.validation_seconds, took)

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def left(self) -> float:
        """Seconds of the budget left for training, the final re-validation kept aside."""
        if self.minutes is None:
            return math.inf
        return 60.0 * self.minutes - self.elapsed() - self.validation_seconds

    # ------------------------------------------------------------------------ deciding
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning has run this epoch's validation by now: an epoch's time includes it.
        if self.minutes is None or self.started is None:
            return
        self.epochs_timed += 1
        done = trainer.current_epoch + 1
        per_epoch = self.elapsed() / self.epochs_timed
        fit = done + int(self.left() // per_epoch)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            fit = min(fit, trainer.max_epochs)
        if fit <= done:
            trainer.should_stop = True
            self.ended_run = trainer.max_epochs is None or done < trainer.max_epochs
            log.info(
                "time budget: stopping after epoch %d (%.1f of %.1f minutes used)",
                done,
                self.elapsed() / 60,
                self.minutes,
            )
        self._project(trainer, fit)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        # An epoch longer than the budget left (a huge epoch, a machine that slowed down) ends
        # the run in the middle of it rather than overrunning.
        if self.minutes is not None and self.left() < 0:
            trainer.should_stop = self.ended_run = True

    def _project(self, trainer: pl.Trainer, epochs: int) -> None:
        """Point the learning-rate decay at the end of ``epochs`` epochs."""
        if epochs == self.projected_epochs or trainer.num_training_batches == math.inf:
            return
        steps = epochs * int(trainer.num_training_batches)
        for config in trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                plan = getattr(schedule, "plan", None)
                if isinstance(plan, StepPlan):
                    plan.total = min(plan.planned, steps)
        if self.projected_epochs is None or epochs < self.projected_epochs:
            log.info("time budget: %d epochs fit (%d steps)", epochs, steps)
        self.projected_epochs = epochs

    def summary(self, trainer: pl.Trainer) -> str | None:
        """The summary's line when the budget ended the run."""
        if not self.ended_run:
            return None
        return (
            f"ended by the time budget ({self.minutes:g} minutes) after {trainer.global_step} "
            f"steps; the learning rate decayed to fit them (--budget.minutes null: no budget)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"minutes": self.minutes}
