"""A run that diverges goes back to its best weights with half the learning rate.

Adam at the paper's learning rate (1e-3, Dosovitskiy & Brox Sect. 2.2: "for most networks")
trains most decoders smoothly, but on some (early layers of a trained VGG-16) a loss that had
fallen for hundreds of steps jumps by orders of magnitude within a few and never comes back
(docs/trained-networks.md has the runs). A lower rate for every run would slow the ones that
are stable. Instead, at each validation the guard keeps a copy of
the weights and optimizer state that gave the best error so far; a validation error more
than ``factor`` times that best means the run has diverged: the copy comes back, and the
learning rate (its whole schedule) is halved. A stable run never meets it and is unchanged.
Under DDP every process sees the same reduced validation error and holds the same weights,
so all make the same decision.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)

MONITOR = "val/normalized_error"


class DivergenceGuard(Callback):
    """Roll a diverged run back to its best weights and halve its learning rate.

    Args:
        factor: a validation error above ``factor`` times the best so far is a divergence
            (``null``: never roll back).
        max_rollbacks: at most this many roll-backs in a run; later divergences are left as
            they are (the best checkpoint is kept whatever happens).
    """

    def __init__(self, factor: float | None = 2.0, max_rollbacks: int = 4) -> None:
        if factor is not None and not (isinstance(factor, int | float) and factor > 1):
            raise ValueError(f"divergence.factor must be a number above 1 or null, got {factor!r}")
        if max_rollbacks < 0:
            raise ValueError(f"divergence.max_rollbacks must be >= 0, got {max_rollbacks}")
        self.factor = factor
        self.max_rollbacks = max_rollbacks
        self.best = math.inf
        self.best_step = -1
        self.rollbacks: list[tuple[int, int, float]] = []  # (at step, back to step, new lr)
        self._snapshot: dict[str, Any] | None = None
        #: the roll-backs as the fit ended (validating best.ckpt afterwards restores the
        #: callbacks' state saved in it)
        self._at_fit_end: list[tuple[int, int, float]] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._at_fit_end = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._at_fit_end = list(self.rollbacks)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # during fit only: not the re-validation of best.ckpt that ends a run
        fitting = trainer.state.fn == TrainerFn.FITTING
        if self.factor is None or trainer.sanity_checking or not fitting:
            return
        value = trainer.callback_metrics.get(MONITOR)
        if value is None:
            return
        error = float(value)
        if error < self.best:
            self.best, self.best_step = error, trainer.global_step
            self._snapshot = _snapshot(trainer, pl_module)
        elif (
            (not math.isfinite(error) or error > self.factor * self.best)
            and self._snapshot is not None
            and len(self.rollbacks) < self.max_rollbacks
        ):
            self._roll_back(trainer, pl_module, error)

    def _roll_back(self, trainer: pl.Trainer, pl_module: pl.LightningModule, error: float) -> None:
        snapshot = self._snapshot
        assert snapshot is not None
        pl_module.load_state_dict(snapshot["module"], strict=False)
        for optimizer, state in zip(trainer.optimizers, snapshot["optimizers"], strict=True):
            optimizer.load_state_dict(copy.deepcopy(state))
        # the whole schedule at half its height, from the step the run has reached
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [lr * 0.5 for lr in scheduler.base_lrs]
            lambdas = getattr(scheduler, "lr_lambdas", None)
            for group, base, scale in zip(
                scheduler.optimizer.param_groups, scheduler.base_lrs, lambdas or [], strict=False
            ):
                group["lr"] = base * scale(scheduler.last_epoch)
        scheduled = {id(c.scheduler.optimizer) for c in trainer.lr_scheduler_configs}
        for optimizer in trainer.optimizers:
            if id(optimizer) not in scheduled:
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.rollbacks.append((trainer.global_step, self.best_step, lr))
        log.warning(
            "diverged: validation error %.4g is over %g times the best (%.4g, step %d); back to "
            "the weights of step %d with the learning rate halved (now %.3g)",
            error,
            self.factor,
            self.best,
            self.best_step,
            self.best_step,
            lr,
        )

    def summary(self) -> str | None:
        """The run summary's line when the guard rolled the run back."""
        rollbacks = self.rollbacks if self._at_fit_end is None else self._at_fit_end
        if not rollbacks:
            return None
        steps = ", ".join(f"step {at} to {back}" for at, back, _ in rollbacks)
        return (
            f"diverged {len(rollbacks)} time(s), rolled back ({steps}) with the learning "
            f"rate halved each time (ending at {rollbacks[-1][2]:.3g}); "
            "--divergence.factor null turns this off"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "rollbacks": self.rollbacks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict.get("best", math.inf))
        self.best_step = int(state_dict.get("best_step", -1))
        self.rollbacks = [tuple(r) for r in state_dict.get("rollbacks", [])]


@torch.no_grad()
def _snapshot(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Copies of what trains (parameters with gradients, every buffer) and of every
    optimizer's state; a frozen network's weights do not change and are not copied."""
    frozen = {name for name, p in pl_module.named_parameters() if not p.requires_grad}
    module = {
        name: value.detach().clone()
        for name, value in pl_module.state_dict().items()
        if name not in frozen
    }
    optimizers = [copy.deepcopy(optimizer.state_dict()) for optimizer in trainer.optimizers]
    return {"module": module, "optimizers": optimizers}
