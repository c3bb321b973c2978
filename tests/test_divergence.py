"""The divergence guard: a diverged run goes back to its best weights with half the rate."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from featinv.training.divergence import DivergenceGuard
from featinv.training.options import linear_decay


class Scripted(pl.LightningModule):
    """Adam on a small regression; each validation reports the next error of a script."""

    def __init__(self, errors: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(4))
        self.errors = errors
        self.validations = 0

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight - batch[0]).square().sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/normalized_error", self.errors[self.validations])
        self.validations += 1

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay(12, 0.5, 0.1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class Recorder(pl.Callback):
    """What the run holds after each validation (after the guard has acted)."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []
        self.adam_steps: list[float] = []
        self.lrs: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        self.weights.append(pl_module.weight.detach().clone())
        self.adam_steps.append(float(optimizer.state[pl_module.weight]["step"]))
        self.lrs.append(optimizer.param_groups[0]["lr"])


def run(errors: list[float], guard: DivergenceGuard) -> tuple[Recorder, pl.Trainer]:
    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.randn(3, 4) + 5.0, batch_size=1)
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=len(errors),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=[guard, recorder],
        accelerator="cpu",
    )
    trainer.fit(Scripted(errors), data, data)
    return recorder, trainer


def test_a_diverged_run_gets_its_best_weights_back_with_half_the_learning_rate():
    guard = DivergenceGuard(factor=2.0)
    recorder, trainer = run([0.5, 0.4, 0.9, 0.3], guard)
    # validation 3 (0.9 > 2 x 0.4): the weights and Adam's state of validation 2 are back
    assert torch.equal(recorder.weights[2], recorder.weights[1])
    assert recorder.adam_steps[2] == recorder.adam_steps[1] == 6
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs == [pytest.approx(0.05)]
    # the halved schedule, at the step the run had reached (9 of 12: decaying)
    assert recorder.lrs[2] == pytest.approx(0.05 * scheduler.lr_lambdas[0](9))
    assert recorder.lrs[3] == pytest.approx(0.05 * scheduler.lr_lambdas[0](12))
    assert guard.rollbacks == [(9, 6, pytest.approx(recorder.lrs[2]))]
    assert guard.summary().startswith("diverged 1 time(s), rolled back (step 9 to 6)")
    assert guard.best == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("errors", "factor"), [([0.5, 0.4, 0.7, 0.3], 2.0), ([0.5, 0.4, 0.9, 0.3], None)]
)
def test_a_stable_run_or_a_guard_turned_off_changes_nothing(errors, factor):
    guarded, _ = run(errors, DivergenceGuard(factor=factor))
    plain, _ = run(errors, DivergenceGuard(factor=None))
    assert all(torch.equal(a, b) for a, b in zip(guarded.weights, plain.weights, strict=True))
    assert guarded.lrs == plain.lrs
    assert not torch.equal(guarded.weights[2], guarded.weights[1])


@pytest.mark.parametrize("factor", [1.0, 0.5, "2"])
def test_guard_refuses_a_factor_that_is_not_above_one(factor):
    with pytest.raises(ValueError, match=r"divergence\.factor must be a number above 1 or null"):
        DivergenceGuard(factor=factor)
