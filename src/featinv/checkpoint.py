"""featinv's checkpoint format: what the trainer writes, how it is read and checked.

A featinv checkpoint is a Lightning checkpoint (``state_dict`` with ``representation.*`` and
``decoder.*`` keys, ``hyper_parameters`` holding the plain values the networks are built from)
plus a ``featinv`` entry: the format number and the training data's mean image (the honest
constant baseline of the validation report). Everything that knows this layout is here.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.networks import load_networks
from featinv.reliability import (
    NotAFeatinvCheckpointError,
    OptionError,
    UntrustedCheckpointError,
    atomic_write,
    check_file_fits,
)

#: Written into every checkpoint so that loaders can tell a featinv checkpoint from others.
CHECKPOINT_FORMAT = 1

#: Hyper-parameters that fix the networks' shapes: a run resumes only with the same values.
NETWORK_KEYS = ("representation", "representation_options", "image_size", "decoder_options")


#: What the refusal tells a user who trusts the file.
TRUST_HINT = (
    "featinv checkpoints hold only tensors and plain values, so this one was written by "
    "something else or altered. If you trust its origin, pass trust_checkpoint=True "
    "(--trust-checkpoint on the command line)"
)


def featinv_entry(
    train_image_sum: torch.Tensor | None = None, train_image_count: int = 0
) -> dict[str, Any]:
    """The ``featinv`` entry of a checkpoint: the format, and the training images' sum."""
    entry: dict[str, Any] = {"format": CHECKPOINT_FORMAT}
    if train_image_sum is not None:
        entry["train_image_sum"] = train_image_sum.detach().cpu()
        entry["train_image_count"] = int(train_image_count)
    return entry


def save_checkpoint(path: str | Path, module: nn.Module) -> Path:
    """Write ``module`` (an ``InversionModule`` or an ``Inverter``) as a featinv checkpoint.

    The file loads with ``Inverter.from_checkpoint`` and ``load_checkpoint`` like one the
    trainer wrote (it has no optimizer state, so a run cannot resume from it). Written
    atomically: ``path`` is the old file or the complete new one, never a partial one.
    """
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "featinv": featinv_entry(
            getattr(module, "train_image_sum", None), getattr(module, "train_image_count", 0)
        ),
    }
    path = Path(path)
    with atomic_write(path) as stream:
        torch.save(checkpoint, stream)
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", trust: bool = False
) -> dict[str, Any]:
    """Read a featinv checkpoint without executing anything, with a clear error otherwise.

    featinv checkpoints hold only tensors and plain values, so they load with
    ``weights_only=True``: a pickle that names any other callable is refused before it runs.

    Args:
        trust: load with full unpickling (runs whatever code the file names): only for a
            file whose origin you trust.

    Raises:
        FileNotFoundError: the file does not exist.
        UntrustedCheckpointError: loading it would execute code (and ``trust`` is false).
        NotAFeatinvCheckpointError: the file is not a (readable) featinv checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    check_file_fits(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if trust or found is None:  # not a pickle that names code: a broken or foreign file
            reason = str(error).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
            raise NotAFeatinvCheckpointError(
                f"{path} is not a readable PyTorch checkpoint (UnpicklingError: {reason[:120]})"
            ) from None
        raise UntrustedCheckpointError(
            f"refused {path}: loading it would execute `{found.group(1)}`, which its pickle "
            f"names. {TRUST_HINT}"
        ) from None
    except Exception as error:  # torch raises many kinds for a non-checkpoint file
        raise NotAFeatinvCheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(checkpoint, dict) or "featinv" not in checkpoint:
        raise NotAFeatinvCheckpointError(
            f"{path} is not a featinv checkpoint (it has no 'featinv' entry); train one with "
            "`python train.py` or pass a checkpoint that featinv wrote"
        )
    found = checkpoint["featinv"].get("format")
    if found != CHECKPOINT_FORMAT:
        raise NotAFeatinvCheckpointError(
            f"{path} has featinv checkpoint format {found}, this featinv reads {CHECKPOINT_FORMAT}"
        )
    return checkpoint


def check_resumable(checkpoint: dict[str, Any], hparams: dict[str, Any]) -> None:
    """Refuse, by name, to resume a run from a checkpoint of other networks.

    Raises:
        OptionError: naming the first hyper-parameter in ``NETWORK_KEYS`` that differs.
    """
    if "featinv" not in checkpoint:
        raise OptionError("not a featinv checkpoint (no 'featinv' entry): cannot resume from it")
    theirs = checkpoint.get("hyper_parameters", {})
    for key in NETWORK_KEYS:
        if theirs.get(key) != hparams.get(key):
            raise OptionError(
                f"this checkpoint was trained with {key}={theirs.get(key)!r}, the run is "
                f"configured with {key}={hparams.get(key)!r}: resume with the config the "
                "checkpoint was trained with (its config.yaml), or start a new run"
            )
    # Loss weights may change between resumptions; whether there is a discriminator (and a
    # second optimizer) may not.
    adversarial = [
        float((h.get("loss") or {}).get("adversarial", 0)) > 0 for h in (theirs, hparams)
    ]
    if adversarial[0] != adversarial[1]:
        was, now = ("with", "without") if adversarial[0] else ("without", "with")
        raise OptionError(
            f"this checkpoint was trained {was} the adversarial loss and the run is configured "
            f"{now} it (model.loss.adversarial): its discriminator and optimizers cannot carry "
            "over; resume with the config the checkpoint was trained with, or start a new run"
        )


def networks_from_checkpoint(
    checkpoint: dict[str, Any],
    origin: str = "the checkpoint",
    architecture: Any = None,
    trust: bool = False,
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Rebuild Phi and the decoder from a loaded checkpoint alone, with their weights.

    Phi's weights come from the checkpoint (fine-tuned ones, for an autoencoder), so a
    weights file it was trained from need not exist here. Phi may hold fewer weights than the
    checkpoint (featinv 0.1.0 kept a whole AlexNet); every weight it has must be there. A
    checkpoint whose representation names code to import is refused unless the user gives
    the ``architecture`` or ``trust`` (``featinv.networks.load_networks``).
    """
    hp = checkpoint.get("hyper_parameters", {})
    if not isinstance(hp, dict):
        raise NotAFeatinvCheckpointError(f"{origin}: its hyper_parameters are not a mapping")
    representation, decoder, config = load_networks(
        hp, checkpoint.get("state_dict", {}), origin, architecture=architecture, trust=trust
    )
    return representation, decoder, {**hp, **config}


__all__ = [
    "CHECKPOINT_FORMAT",
    "NETWORK_KEYS",
    "NotAFeatinvCheckpointError",
    "UntrustedCheckpointError",
    "check_resumable",
    "featinv_entry",
    "load_checkpoint",
    "networks_from_checkpoint",
    "save_checkpoint",
]
