"""The time budget: the run ends at the step where its time runs out, its decay moved to fit,
validated often enough that the best checkpoint is chosen among several points."""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from featinv.training import budget as budget_module
from featinv.training.budget import TimeBudget
from featinv.training.options import linear_decay


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    return clock


def fake_trainer(total_steps: int, batches_per_epoch: int = 100) -> SimpleNamespace:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay(total_steps, 0.75, 0.1))
    return SimpleNamespace(
        max_epochs=30,
        num_training_batches=batches_per_epoch,
        val_check_batch=batches_per_epoch,
        lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)],
        should_stop=False,
        sanity_checking=False,
    )


def validate(budget: TimeBudget, trainer: SimpleNamespace, clock: Clock, seconds: float) -> None:
    budget.on_validation_start(trainer, None)
    clock.now += seconds
    budget.on_validation_end(trainer, None)


def train(budget, trainer, clock, per_batch: float, validation: float) -> list[int]:
    """Batches of ``per_batch`` seconds, validated as Lightning would, until the budget stops
    the run (or max_epochs ends it); the batches after which validations ran."""
    validated = []
    for batch in range(1, trainer.max_epochs * trainer.num_training_batches + 1):
        clock.now += per_batch
        budget.on_train_batch_end(trainer, None)
        if trainer.should_stop or batch % trainer.val_check_batch == 0:
            validate(budget, trainer, clock, validation)
            validated.append(batch)
        if trainer.should_stop:
            break
    return validated


def test_the_run_ends_at_the_step_its_time_runs_out_and_its_decay_moves_there(clock):
    trainer = fake_trainer(3000)
    budget = TimeBudget(minutes=10)
    validate(budget, SimpleNamespace(sanity_checking=True), clock, 2.0)  # the sanity check
    budget.on_train_start(trainer, None)
    start = clock.now
    validated = train(budget, trainer, clock, per_batch=0.6, validation=5.0)
    plan = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0].plan
    steps = budget.batches
    # 0.6 s a step and a 5 s validation every 100: about 900 steps fit in 600 s
    assert 880 <= steps <= 910 and steps % 100 != 0, steps
    assert plan.total == steps and plan.planned == 3000
    factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert factor(steps) == pytest.approx(0.1)
    # a validation at the last step, and the final re-validation of best.ckpt still fits
    assert validated[-1] == steps and validated[:-1] == list(range(100, steps, 100))
    assert 590 <= clock.now - start + 5.0 <= 600
    assert budget.summary(trainer).startswith(
        f"ended by the time budget (10 minutes) after {steps}"
    )


def test_long_epochs_are_validated_in_parts(clock):
    # 10 s a step: an epoch is 1000 s, more than the 13-minute budget
    trainer = fake_trainer(3000)
    budget = TimeBudget(minutes=13)
    budget.on_train_start(trainer, None)
    validated = train(budget, trainer, clock, per_batch=10.0, validation=4.0)
    # the budget's eighth is 97.5 s: every 5 steps (the largest divisor of 100 that fits)
    assert trainer.val_check_batch == 5
    assert len(validated) >= 8 and validated[0] == 10 and validated[1] == 15
    assert clock.now - 1000.0 + 4.0 <= 13 * 60


def test_the_first_batch_start_up_is_not_taken_for_the_cost_of_a_step(clock):
    trainer = fake_trainer(3000)
    budget = TimeBudget(minutes=10)
    budget.on_train_start(trainer, None)
    clock.now += 60  # the loaders' start
    budget.on_train_batch_end(trainer, None)
    for _ in range(9):
        clock.now += 1.0
        budget.on_train_batch_end(trainer, None)
    assert budget.seconds_per_batch() == pytest.approx(1.0)
    # 531 s left at 1 s a step (no validation measured yet): 10 + 531 steps fit
    assert trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0].plan.total == 541
    assert trainer.val_check_batch == 50  # an epoch of 100 s is more than the budget's eighth


def test_a_run_that_fits_is_left_to_max_epochs(clock):
    trainer = fake_trainer(300)
    trainer.max_epochs = 3
    budget = TimeBudget(minutes=10)
    budget.on_train_start(trainer, None)
    validated = train(budget, trainer, clock, per_batch=0.1, validation=1.0)
    assert validated == [100, 200, 300] and not trainer.should_stop
    assert trainer.val_check_batch == 100 and budget.summary(trainer) is None
    assert trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0].plan.total == 300


def test_no_budget_changes_nothing(clock):
    trainer = fake_trainer(3000)
    budget = TimeBudget(minutes=None)
    budget.on_train_start(trainer, None)
    validated = train(budget, trainer, clock, per_batch=6.0, validation=1.0)
    assert len(validated) == 30 and not trainer.should_stop and budget.summary(trainer) is None
    assert trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0].plan.total == 3000


def test_a_machine_that_slows_down_stops_before_the_budget_is_over(clock):
    trainer = fake_trainer(3000)
    budget = TimeBudget(minutes=1)
    budget.on_train_start(trainer, None)
    clock.now += 30
    budget.on_train_batch_end(trainer, None)
    assert not trainer.should_stop
    clock.now += 31
    budget.on_train_batch_end(trainer, None)
    assert trainer.should_stop


class Regression(pl.LightningModule):
    """A small regression whose every training step takes ``seconds`` of the budget's clock."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(4))
        self.clock, self.seconds = clock, seconds
        self.validated_at: list[int] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.clock.now += self.seconds
        return (self.weight - batch[0]).square().sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # worst at every validation but the one at step 15
        self.log("val/error", 0.5 if self.trainer.global_step == 15 else 1.0)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at.append(self.trainer.global_step)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay(1000, 0.5, 0.1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def test_lightning_validates_and_stops_where_the_budget_says(clock, tmp_path):
    data = torch.utils.data.DataLoader(torch.randn(40, 4), batch_size=1)
    # as train.py sets it: best.ckpt follows every validation, those within an epoch too
    best = ModelCheckpoint(tmp_path, "best", "val/error", save_on_train_epoch_end=False)
    trainer = pl.Trainer(
        max_epochs=25,
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        callbacks=[TimeBudget(minutes=1), best],
        accelerator="cpu",
    )
    model = Regression(clock, seconds=1.0)
    trainer.fit(model, data, data)
    # 1 s a step, 40 steps an epoch: validated every 5 steps (7.5 s is the budget's eighth),
    # the run ended within the minute, mid-epoch, with a validation at its last step
    assert trainer.val_check_batch == 5
    assert model.validated_at[-1] == trainer.global_step
    assert model.validated_at[:3] == [10, 15, 20]
    assert torch.load(best.best_model_path, weights_only=False)["global_step"] == 15
    assert 55 <= trainer.global_step <= 60 and trainer.global_step % 40 != 0, trainer.global_step


def test_train_py_keeps_the_best_of_validations_within_an_epoch(tmp_path):
    from featinv.cli.train import build_cli

    cli = build_cli([f"--checkpoint_dir={tmp_path}", "--trainer.logger=false"], run=False)
    best = [c for c in cli.trainer.checkpoint_callbacks if c.monitor == "val/normalized_error"]
    assert len(best) == 1 and best[0]._save_on_train_epoch_end is False
