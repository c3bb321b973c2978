"""The exported decoder file (``.safetensors``): what ``featinv-export`` writes and
``Inverter.load`` reads.

A ``.safetensors`` file holds tensors and a string-to-string metadata map, nothing that runs
when read. featinv writes the decoder's weights (``decoder.*``), the representation's own
small state (``representation.*``: e.g. a network's input normalization), and, when they were
trained (autoencoder) or on request (``--include-representation``), the representation's
weights; the configuration goes into the metadata as JSON under ``"featinv"``:

    {"format": 1, "featinv_version": ..., "representation": "hog",
     "representation_options": {...}, "image_size": 64, "decoder_options": {...},
     "train_encoder": false, "representation_weights": "embedded" | "supplied by the user",
     "training": {"train_shards": ..., "synthetic_fraction": ..., "images_seen": ...},
     "validation_error": 0.512}

Third-party network weights (AlexNet, VGG) are not copied silently: a file without them says,
when loaded, which weights to supply.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, networks_from_checkpoint
from featinv.networks import load_networks
from featinv.reliability import (
    NotAFeatinvCheckpointError,
    atomic_write,
    check_file_fits,
    json_safe,
)

#: Metadata key of the configuration.
METADATA_KEY = "featinv"
#: Configuration keys a file must have.
REQUIRED = ("format", "representation", "representation_options", "image_size", "decoder_options")


def _network_weights(representation: nn.Module) -> set[str]:
    """Keys of Phi's state that are a network's weights (parameters), not its small state."""
    return {name for name, _ in representation.named_parameters()}


def featinv_version() -> str:
    """The installed featinv's version (from the package metadata), stamped into files."""
    try:
        return metadata.version("featinv")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def _training_facts(checkpoint: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """What a checkpoint knows of its training data and its best validation error."""
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    facts = {k: data[k] for k in ("train_shards", "synthetic_fraction", "image_size") if k in data}
    count = checkpoint.get("featinv", {}).get("train_image_count")
    if count:
        facts["images_seen"] = int(count)
    error = None
    for name, state in (checkpoint.get("callbacks") or {}).items():
        score = state.get("best_model_score") if isinstance(state, dict) else None
        if "val/normalized_error" in str(name) and score is not None:
            error = float(score)
    return facts, error


def export_path(checkpoint_path: str | Path, out: str | Path) -> Path:
    """Where ``export_decoder`` writes: ``OUT.safetensors`` (the suffix added if missing), or
    ``OUT/<run>-<name>.safetensors`` when OUT is a folder (``hog-best`` for hog/best.ckpt)."""
    out, source = Path(out), Path(checkpoint_path)
    if out.is_dir():
        return out / f"{source.parent.name or 'decoder'}-{source.stem}.safetensors"
    return out if out.suffix == ".safetensors" else out.with_name(out.name + ".safetensors")


def export_decoder(
    checkpoint_path: str | Path,
    out: str | Path,
    include_representation: bool = False,
    trust_checkpoint: bool = False,
    overwrite: bool = False,
    architecture: Any = None,
) -> Path:
    """Write the checkpoint's networks and configuration as ``OUT.safetensors``
    (``export_path``). An existing file is not replaced unless ``overwrite``.

    Raises:
        FileExistsError: the output exists and ``overwrite`` is false.
    """
    from safetensors.torch import save

    out = export_path(checkpoint_path, out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if out.resolve() == Path(checkpoint_path).resolve():
        raise FileExistsError(f"{out} is the checkpoint itself")
    checkpoint = load_checkpoint(checkpoint_path, trust=trust_checkpoint)
    representation, decoder, hp = networks_from_checkpoint(
        checkpoint, str(checkpoint_path), architecture, trust_checkpoint
    )
    weights = _network_weights(representation)
    embed = include_representation or bool(hp.get("train_encoder")) or not weights
    tensors = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    for key, value in representation.state_dict().items():
        if embed or key not in weights:
            tensors[f"representation.{key}"] = value
    training, validation_error = _training_facts(checkpoint)
    config = {
        "format": CHECKPOINT_FORMAT,
        "featinv_version": featinv_version(),
        "representation": hp["representation"],
        "representation_options": hp.get("representation_options") or {},
        "image_size": hp["image_size"],
        "decoder_options": hp.get("decoder_options") or {},
        "train_encoder": bool(hp.get("train_encoder")),
        "representation_weights": "embedded"
        if embed and weights
        else ("supplied by the user" if weights else "none"),
        "training": training,
        "validation_error": validation_error,
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    data = save(tensors, metadata={METADATA_KEY: json.dumps(json_safe(config), allow_nan=False)})
    with atomic_write(out) as stream:
        stream.write(data)
    return out


def read_exported(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The configuration and tensors of an exported file, with a clear error for anything else.

    Raises:
        NotAFeatinvCheckpointError: not a safetensors file, or without a valid configuration.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"decoder file {path} does not exist")
    check_file_fits(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise NotAFeatinvCheckpointError(
            f"{path} is not a readable safetensors file ({error})"
        ) from None
    if METADATA_KEY not in metadata:
        raise NotAFeatinvCheckpointError(
            f"{path} has no featinv configuration in its metadata (keys: "
            f"{sorted(metadata) or 'none'}): it was not written by featinv-export"
        )
    try:
        config = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, TypeError) as error:
        raise NotAFeatinvCheckpointError(
            f"{path}: its featinv metadata is not JSON ({error})"
        ) from None
    if not isinstance(config, dict):
        raise NotAFeatinvCheckpointError(
            f"{path}: its featinv metadata must be a JSON object, got {type(config).__name__}"
        )
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise NotAFeatinvCheckpointError(f"{path}: its featinv metadata lacks {', '.join(missing)}")
    if config["format"] != CHECKPOINT_FORMAT:
        raise NotAFeatinvCheckpointError(
            f"{path} has featinv format {config['format']}, this featinv reads {CHECKPOINT_FORMAT}"
        )
    return config, tensors


def networks_from_export(
    path: str | Path,
    representation_weights: str | None = None,
    architecture: Any = None,
    trust: bool = False,
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Rebuild Phi and the decoder from an exported file (see ``Inverter.load``).

    A file whose representation names code to import is refused unless the user gives the
    ``architecture`` or ``trust`` (``featinv.networks.load_networks``); nothing is imported
    before that decision.
    """
    config, tensors = read_exported(path)
    options = config["representation_options"]
    if not isinstance(options, dict):
        raise NotAFeatinvCheckpointError(f"{path}: representation_options must be a mapping")
    options = dict(options)
    embedded = config.get("representation_weights") == "embedded"
    needs_file = config.get("representation_weights") == "supplied by the user"
    if needs_file:
        if representation_weights is None:
            raise NotAFeatinvCheckpointError(
                f"{path} does not carry the weights of its representation "
                f"({config['representation']}, {options}): they are a third party's and are "
                "not copied into decoder files. "
                "Pass the file it was trained with (representation_weights=PATH, or "
                "--representation-weights PATH), or export with --include-representation"
            )
        options["weights"] = str(representation_weights)
    representation, decoder, built = load_networks(
        {**config, "representation_options": options},
        tensors,
        str(path),
        load_weights=needs_file,
        representation_complete=embedded,
        extra_representation_keys=False,
        architecture=architecture,
        trust=trust,
    )
    return representation, decoder, {**config, **built}
