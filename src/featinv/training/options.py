"""The training module's plain options: their checks and the learning-rate schedule.

Kept apart from ``featinv.training`` so the LightningModule stays about training; these are
plain functions of plain values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from featinv.reliability import OptionError, require
from featinv.representations import representation_class, training_image_size

log = logging.getLogger(__name__)


class StepPlan:
    """The length of a learning-rate schedule: ``planned`` as configured, ``total`` as a time
    budget (``featinv.training.budget``) projects it, never past ``planned``."""

    def __init__(self, total: float) -> None:
        self.total = self.planned = total


def representation_image_size(representation: str, options: dict[str, Any] | None) -> int:
    """``model.image_size: null``: the representation's ``training_image_size``, said once."""
    side = training_image_size(representation, options)
    layer = (options or {}).get("layer")
    name = f"{representation} {layer}" if layer else representation
    log.info("image size %d px: the training size of %s (data.image_size sets one)", side, name)
    return side


def linear_decay(
    total: float, start: float, final: float, warmup: int = 0
) -> Callable[[int], float]:
    """The learning-rate factor at a step: 1 until ``start`` of ``total`` steps, then a linear
    decay to ``final`` at the end ("we gradually decreased the learning rate towards the end
    of training", Dosovitskiy & Brox, Sect. 2.2), times a linear warm-up over the first
    ``warmup`` steps.

    The warm-up is ours, not the paper's: on a trained network's features Adam's first steps
    at the full rate, taken while its second-moment estimates are still poor (and while the
    decoder's input standardization is still being measured), can throw the decoder into a
    divergence it does not come back from (``docs/trained-networks.md``).

    Without a known length (no max_steps, an endless loader) the rate stays constant. The
    function's ``plan`` (a ``StepPlan``) holds the length; a plain function, so a resumed
    schedule takes the current settings rather than the checkpoint's.
    """
    plan = StepPlan(total)

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        if not math.isfinite(plan.total) or plan.total <= 0:
            return ramp
        progress = step / plan.total
        if progress <= start:
            return ramp
        decay = 1.0 - (1.0 - final) * min((progress - start) / max(1.0 - start, 1e-8), 1.0)
        return ramp * decay

    factor.plan = plan  # type: ignore[attr-defined]
    return factor


def check_model_options(values: dict[str, Any]) -> None:
    """Refuse impossible model options before anything is built, naming the option."""
    try:
        representation_class(values["representation"])
    except ValueError as error:
        raise OptionError(f"model.representation: {error}") from None
    require(
        values["image_size"] >= 8,
        "model.image_size (the CLI sets it from data.image_size)",
        "at least 8 pixels",
        values["image_size"],
    )
    require(values["lr"] > 0, "model.lr", "positive", values["lr"])
    betas = values["betas"]
    require(
        betas is None or (len(betas) == 2 and all(0 <= b < 1 for b in betas)),
        "model.betas",
        "[beta1, beta2] with values in [0, 1), or null",
        betas,
    )
    require(values["weight_decay"] >= 0, "model.weight_decay", "at least 0", values["weight_decay"])
    for name in ("lr_decay_start", "lr_final_factor"):
        require(0 <= values[name] <= 1, f"model.{name}", "in [0, 1]", values[name])
    warmup = values["lr_warmup_steps"]
    require(
        isinstance(warmup, int) and warmup >= 0, "model.lr_warmup_steps", "an integer >= 0", warmup
    )
    require(
        values["max_normalizer_images"] >= 2,
        "model.max_normalizer_images",
        "at least 2 (N averages over pairs)",
        values["max_normalizer_images"],
    )
    require(values["grid_images"] >= 0, "model.grid_images", "at least 0", values["grid_images"])
    require(
        values["nonfinite_loss"] in ("stop", "skip"),
        "model.nonfinite_loss",
        "'stop' or 'skip'",
        values["nonfinite_loss"],
    )


#: The optimizer settings a resumed run may change; each change is applied and logged.
RESUMABLE_CHANGES = (
    "lr",
    "betas",
    "weight_decay",
    "lr_decay_start",
    "lr_final_factor",
    "lr_warmup_steps",
)


def apply_resumed_changes(
    optimizer: Any, scheduler: Any, saved: dict[str, Any], current: dict[str, Any]
) -> list[str]:
    """Apply the optimizer settings the user changed for a resumed run to the restored
    optimizer and schedule (which hold the checkpoint's), and say what changed.

    The schedule's factor function is built from the current settings; its base rate and the
    rate in force are set from the new ``lr``.
    """
    changes = []
    for key in RESUMABLE_CHANGES:
        old, new = saved.get(key), current.get(key)
        if old is not None and new is not None and _differs(old, new):
            changes.append(f"model.{key} {old} -> {new}")
    if not changes:
        return []
    for index, group in enumerate(optimizer.param_groups):
        group["betas"] = tuple(current["betas"])
        group["weight_decay"] = current["weight_decay"]
        group["initial_lr"] = current["lr"]
        if scheduler is not None:
            scheduler.base_lrs[index] = current["lr"]
            factor = scheduler.lr_lambdas[index](scheduler.last_epoch)
            group["lr"] = current["lr"] * factor
        else:
            group["lr"] = current["lr"]
    if scheduler is not None:
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return changes


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, (list, tuple)) or isinstance(new, (list, tuple)):
        return [float(v) for v in old] != [float(v) for v in new]
    return float(old) != float(new)
