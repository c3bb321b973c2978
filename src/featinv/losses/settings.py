"""The loss settings (``model.loss``) and the networks they call for: the comparator C of
the feature loss and the discriminator D of the adversarial loss (DeePSiM, Sect. 3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

from featinv.losses.discriminator import Discriminator
from featinv.reliability import OptionError, require
from featinv.representations import Representation, build_representation

log = logging.getLogger(__name__)

#: Keys of ``model.loss`` and what each one is.
LOSS_KEYS = {
    "image": "weight of the image loss (MSE)",
    "feature": "weight of the feature loss in the comparator's space",
    "comparator": "the comparator C: {representation: NAME, options: {...}}; null is Phi itself",
    "adversarial": "weight of the generator's adversarial loss",
    "discriminator": "the discriminator and its optimizer (see DiscriminatorSettings)",
}


@dataclass(frozen=True)
class DiscriminatorSettings:
    """The discriminator of the adversarial loss and how it is trained.

    Attributes:
        width: channels of its first convolution (doubling, up to ``8 * width``).
        lr: its Adam learning rate (DeePSiM: 2e-4, the generator's too).
        betas: its Adam betas (DeePSiM: 0.9, 0.999, as for the generator).
        pause_ratio: DeePSiM's safeguard: the discriminator is not updated on a batch where
            its loss is below ``pause_ratio`` times the generator's adversarial loss (it
            wins too easily: its gradients would only teach the generator noise).
        feature_grid: spatial features are average-pooled to at most this side before the
            discriminator's fully connected feature branch.
    """

    width: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    pause_ratio: float = 0.1
    feature_grid: int = 4

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> DiscriminatorSettings:
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionError(
                f"model.loss.discriminator: unknown option(s) {unknown}; known: {sorted(known)}"
            )
        if "betas" in options:
            options["betas"] = tuple(options["betas"])
        settings = cls(**options)
        where = "model.loss.discriminator"
        require(settings.width >= 1, f"{where}.width", "at least 1", settings.width)
        require(settings.lr > 0, f"{where}.lr", "positive", settings.lr)
        require(
            len(settings.betas) == 2 and all(0 <= b < 1 for b in settings.betas),
            f"{where}.betas",
            "[beta1, beta2] with values in [0, 1)",
            list(settings.betas),
        )
        require(settings.pause_ratio >= 0, f"{where}.pause_ratio", "at least 0",
                settings.pause_ratio)  # fmt: skip
        require(settings.feature_grid >= 1, f"{where}.feature_grid", "at least 1",
                settings.feature_grid)  # fmt: skip
        return settings


@dataclass(frozen=True)
class LossSettings:
    """The weights of the loss terms and what the feature and adversarial terms use."""

    image: float = 1.0
    feature: float = 0.0
    comparator: dict[str, Any] | None = None
    adversarial: float = 0.0
    discriminator: DiscriminatorSettings = field(default_factory=DiscriminatorSettings)

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> LossSettings:
        """Parse ``model.loss`` (plain values, as saved in checkpoints), naming what is wrong."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(LOSS_KEYS))
        if unknown:
            known = ", ".join(f"{k} ({v})" for k, v in LOSS_KEYS.items())
            raise OptionError(f"model.loss: unknown term(s) {unknown}; known: {known}")
        for name in ("image", "feature", "adversarial"):
            value = options.get(name, getattr(cls, name))
            require(
                isinstance(value, int | float) and value >= 0,
                f"model.loss.{name}",
                "a weight of at least 0",
                value,
            )
        comparator = options.get("comparator")
        if comparator is not None:
            require(
                isinstance(comparator, dict)
                and "representation" in comparator
                and set(comparator) <= {"representation", "options"},
                "model.loss.comparator",
                "null (Phi itself) or {representation: NAME, options: {...}}",
                comparator,
            )
        if options.get("adversarial", 0) > 0 and options.get("discriminator") is None:
            log.info(
                "model.loss.adversarial is on without model.loss.discriminator: using the "
                "default discriminator %s",
                DiscriminatorSettings(),
            )
        settings = cls(
            image=float(options.get("image", cls.image)),
            feature=float(options.get("feature", cls.feature)),
            comparator=comparator,
            adversarial=float(options.get("adversarial", cls.adversarial)),
            discriminator=DiscriminatorSettings.from_options(options.get("discriminator")),
        )
        require(
            settings.image + settings.feature + settings.adversarial > 0,
            "model.loss",
            "at least one term with a positive weight",
            options,
        )
        return settings


def build_comparator(comparator: dict[str, Any] | None, phi: Representation) -> Representation:
    """The comparator C of the feature loss: ``phi`` itself for ``None``, else the named
    representation, frozen and in eval mode.

    Raises:
        OptionError: a comparator without gradients (LBP, SIFT), or a bad name or option.
    """
    if comparator is None:
        network = phi
    else:
        try:
            network = build_representation(
                comparator["representation"], **(comparator.get("options") or {})
            )
        except (TypeError, ValueError) as error:
            raise OptionError(f"model.loss.comparator: {error}") from None
        network.requires_grad_(False).eval()
    if not network.differentiable:
        where = "model.loss.comparator" if comparator else "model.loss.comparator (null: Phi)"
        raise OptionError(
            f"{where}: {network.label} has no gradients (its binning or keypoint detection is "
            "piecewise constant), so a feature loss through it cannot train the decoder; "
            "compare in a differentiable representation instead, e.g. "
            "{representation: hog} or {representation: cnn, options: {layer: conv5, ...}}"
        )
    return network


def loss_networks(
    settings: LossSettings, phi: Representation, image_size: int, train_encoder: bool = False
) -> tuple[Representation | None, Discriminator | None]:
    """The comparator of the feature loss when it is not ``phi`` (``None`` when it is, or
    when the term is off) and the discriminator of the adversarial loss (``None`` when off).

    Raises:
        OptionError: a comparator without gradients, or Phi as comparator while Phi trains.
    """
    comparator = None
    if settings.feature > 0:
        if settings.comparator is None and train_encoder:
            raise OptionError(
                "model.loss.comparator: the feature loss compares in a fixed network, and "
                "with train_encoder Phi is trained: name a comparator"
            )
        comparator = build_comparator(settings.comparator, phi)
        if comparator is phi:
            comparator = None
    discriminator = None
    if settings.adversarial > 0:
        discriminator = Discriminator(
            image_size,
            phi.output_shape(image_size),
            width=settings.discriminator.width,
            feature_grid=settings.discriminator.feature_grid,
        )
    return comparator, discriminator
