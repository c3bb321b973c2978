"""The time budget: the run ends after the last epoch that fits, its decay moved to fit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from featinv.training import budget as budget_module
from featinv.training.budget import TimeBudget
from featinv.training.options import linear_decay


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_trainer(total_steps: int) -> SimpleNamespace:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay(total_steps, 0.75, 0.1))
    return SimpleNamespace(
        current_epoch=0,
        max_epochs=30,
        num_training_batches=100,
        lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)],
        should_stop=False,
        sanity_checking=False,
    )


def run_epoch(budget: TimeBudget, trainer: SimpleNamespace, clock: Clock, seconds: float) -> None:
    """One epoch: training, then a 5-second validation, then the epoch's end."""
    clock.now += seconds - 5
    budget.on_validation_start(trainer, None)
    clock.now += 5
    budget.on_validation_end(trainer, None)
    budget.on_train_batch_end(trainer, None)
    budget.on_train_epoch_end(trainer, None)
    trainer.current_epoch += 1


def test_budget_stops_after_the_last_epoch_that_fits_and_decays_to_it(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    trainer = fake_trainer(3000)
    plan = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0].plan
    budget = TimeBudget(minutes=10)
    budget.on_train_start(trainer, None)
    run_epoch(budget, trainer, clock, 60)
    # 60 s per epoch, 535 s left once the final re-validation (5 s) is kept aside: 9 epochs
    assert not trainer.should_stop
    assert plan.total == 900 and plan.planned == 3000
    factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert factor(600) == 1.0 and factor(900) == pytest.approx(0.1)
    while not trainer.should_stop:
        run_epoch(budget, trainer, clock, 60)
    assert trainer.current_epoch == 9
    assert clock.now - 1000.0 + 5 <= 600  # the re-validation still fits
    trainer.global_step = 900
    assert budget.summary(trainer).startswith("ended by the time budget (10 minutes) after 900")


def test_no_budget_changes_nothing(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    trainer = fake_trainer(3000)
    budget = TimeBudget(minutes=None)
    budget.on_train_start(trainer, None)
    for _ in range(30):
        run_epoch(budget, trainer, clock, 600)
    assert not trainer.should_stop and budget.summary(trainer) is None
    assert trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0].plan.total == 3000


def test_an_epoch_longer_than_the_budget_ends_in_its_middle(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    trainer = fake_trainer(3000)
    budget = TimeBudget(minutes=1)
    budget.on_train_start(trainer, None)
    clock.now += 30
    budget.on_train_batch_end(trainer, None)
    assert not trainer.should_stop
    clock.now += 31
    budget.on_train_batch_end(trainer, None)
    assert trainer.should_stop


@pytest.mark.parametrize("minutes", [0, -1, "ten"])
def test_budget_refuses_what_is_not_a_positive_number(minutes):
    with pytest.raises(ValueError, match=r"budget\.minutes must be a positive number or null"):
        TimeBudget(minutes=minutes)
