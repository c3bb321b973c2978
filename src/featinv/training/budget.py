"""A wall-clock budget for a run: it ends at the step where its time runs out, its learning
rate decayed as if the number of steps that fit had been asked for.

A step costs what the representation and the machine cost: a HOG step is ten times cheaper
than a VGG-16 conv5_3 step on a CPU, and one CPU twice as fast as another, so a fixed number
of steps is either too short for one or too long for the other. With ``minutes`` set, the run
measures its steps and its validations, projects how many steps fit (keeping time for the
validations on the way and for the re-validation of ``best.ckpt`` that ends every run), ends
at that step with a last validation, and validates often enough that the best checkpoint is
chosen among several even when an epoch takes most of the budget. The learning-rate schedule
(``featinv.training.options.linear_decay``) follows the projection, so the decay of Sect. 2.2
("we gradually decreased the learning rate towards the end of training") still happens at
the end.
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

#: Batches timed before the first projection (the first ones include the loaders' start).
MEASURED_BATCHES = 10
#: The budget holds at least this many validations: an epoch longer than its share of the
#: budget is validated in parts (every divisor of its length that fits the share).
VALIDATIONS_PER_BUDGET = 8


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
        self.batches = 0  # training batches of this run
        self.batches_done = 0  # since the start of training, a resumed run's earlier ones too
        #: the longest validation so far (the sanity check's until a real one has run)
        self.validation_seconds = 0.0
        self.validating_seconds = 0.0  # all validations of this run together
        self._validation_started: float | None = None
        self._first_batch_end: float | None = None
        self._validating_since_first = 0.0
        #: the training batches the run is projected to end after
        self.projected_batches: int | None = None
        #: whether the budget, rather than max_epochs / max_steps, ended the run
        self.ended_run = False

    # ----------------------------------------------------------------------- measuring
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.monotonic()
        self.batches = 0
        self.validating_seconds = 0.0
        self._first_batch_end = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._validation_started is None:
            return
        took = time.monotonic() - self._validation_started
        # The sanity check sees a few batches of the validation set: a first, low estimate.
        self.validation_seconds = max(self.validation_seconds, took)
        if not trainer.sanity_checking and self.started is not None:
            self.validating_seconds += took
            self._validating_since_first += took

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def left(self) -> float:
        """Seconds of the budget left for training, the final re-validation kept aside."""
        if self.minutes is None:
            return math.inf
        return 60.0 * self.minutes - self.elapsed() - self.validation_seconds

    def seconds_per_batch(self) -> float:
        """Training time per batch so far, validations and the first batch (the loaders'
        start, the first convolutions' set-up) excluded."""
        if self._first_batch_end is None or self.batches < 2:
            return (self.elapsed() - self.validating_seconds) / max(self.batches, 1)
        since = time.monotonic() - self._first_batch_end - self._validating_since_first
        return since / (self.batches - 1)

    # ------------------------------------------------------------------------ deciding
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.minutes is None or self.started is None:
            return
        self.batches += 1
        if self.batches == 1:
            self._first_batch_end = time.monotonic()
            self._validating_since_first = 0.0
        self.batches_done = _batches_done(trainer, self.batches)  # a resume's earlier ones too
        overrun = self.left() < 0  # a machine that slowed down: stop now rather than overrun
        if self.batches < MEASURED_BATCHES and not overrun:
            return
        every, fit = self._plan(trainer) if not overrun else (None, self.batches_done)
        # DDP processes time themselves apart: all follow the first one's decision
        every, fit = _broadcast(trainer, (every, fit))
        if every is not None and every != getattr(trainer, "val_check_batch", None):
            trainer.val_check_batch = every
            log.info("time budget: a long epoch, validated every %d steps", every)
        last = _last_batch(trainer)
        self._project(trainer, fit if last is None else min(fit, last))
        if self.batches_done >= fit and (last is None or fit < last):
            self._stop(trainer)

    def _plan(self, trainer: pl.Trainer) -> tuple[int | None, int]:
        """How often to validate, and after how many training batches the run ends."""
        per_batch = self.seconds_per_batch()
        every = getattr(trainer, "val_check_batch", None)
        if self.projected_batches is None and _finite(every):
            every = _validation_interval(int(every), per_batch, 60.0 * self.minutes)
        if not _finite(every):
            every = _batches_per_epoch(trainer)
        validation_share = self.validation_seconds / every if _finite(every) else 0.0
        # every batch from here costs its training time and its share of the validations;
        # the validation at the step the run ends on is kept aside too
        left = self.left() - self.validation_seconds
        fit = self.batches_done + max(int(left // (per_batch + validation_share)), 0)
        return (int(every) if _finite(every) else None), fit

    def _stop(self, trainer: pl.Trainer) -> None:
        # Lightning validates at the batch where should_stop is set, then ends the fit
        if not trainer.should_stop:
            log.info(
                "time budget: stopping after %d steps (%.1f of %.1f minutes used)",
                self.batches_done,
                self.elapsed() / 60,
                self.minutes,
            )
        trainer.should_stop = self.ended_run = True

    def _project(self, trainer: pl.Trainer, batches: int) -> None:
        """Point the learning-rate decay at the end of ``batches`` training batches."""
        for config in trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                plan = getattr(schedule, "plan", None)
                if isinstance(plan, StepPlan):
                    plan.total = min(plan.planned, batches)
        if self.projected_batches is None or batches < 0.9 * self.projected_batches:
            log.info("time budget: %d steps fit", batches)
        self.projected_batches = batches

    def summary(self, trainer: pl.Trainer) -> str | None:
        """The summary's line when the budget ended the run."""
        if not self.ended_run:
            return None
        return (
            f"ended by the time budget ({self.minutes:g} minutes) after "
            f"{max(self.batches_done, self.batches)} "
            f"steps; the learning rate decayed to fit them (--budget.minutes null: no budget)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"minutes": self.minutes}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _batches_per_epoch(trainer: pl.Trainer) -> float:
    return getattr(trainer, "num_training_batches", math.inf)


def _batches_done(trainer: pl.Trainer, this_run: int) -> int:
    """Training batches since the start of training, those before a resume included."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    index = getattr(loop, "total_batch_idx", None)
    return index + 1 if isinstance(index, int) else this_run


def _validation_interval(every: int, per_batch: float, budget: float) -> int:
    """Validate within an epoch when one takes more than its share of the budget (at the
    largest divisor of the interval that fits the share), so the best checkpoint and the
    divergence guard see several points of a long run."""
    share = budget / VALIDATIONS_PER_BUDGET
    if every * per_batch <= share:
        return every
    fitting = [d for d in range(1, every + 1) if every % d == 0 and d * per_batch <= share]
    return max(fitting, default=1)


def _last_batch(trainer: pl.Trainer) -> int | None:
    """The batch after which max_epochs ends the run (``None``: no such limit)."""
    epoch = _batches_per_epoch(trainer)
    if _finite(epoch) and _finite(getattr(trainer, "max_epochs", None)):
        return int(epoch) * trainer.max_epochs
    return None


def _broadcast(trainer: pl.Trainer, decision: Any) -> Any:
    strategy = getattr(trainer, "strategy", None)
    return decision if strategy is None else strategy.broadcast(decision)
