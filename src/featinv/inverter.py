"""Fast feed-forward inversion from a trained checkpoint, without Lightning.

    inverter = Inverter.from_checkpoint("checkpoints/hog/best.ckpt", device="cuda")
    reconstructions = inverter.reconstruct(images)   # features computed inside
    reconstructions = inverter.decode(features)      # features you already have

One forward pass per batch, in inference mode (Dosovitskiy & Brox: about 5 ms per image on a
GPU, against seconds to minutes for optimization-based inversion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.networks import CHECKPOINT_FORMAT, build_networks
from featinv.representations.alexnet import FROM_CHECKPOINT


class NotAFeatinvCheckpointError(ValueError):
    """The file is not a checkpoint written by featinv's trainer."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a featinv checkpoint, with a clear error for anything else.

    Raises:
        FileNotFoundError: the file does not exist.
        NotAFeatinvCheckpointError: the file is not a (readable) featinv checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # Lightning checkpoints hold plain hyper-parameters next to the tensors; they are not
        # loadable with weights_only=True. Only load checkpoints you trust.
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
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


class Inverter(nn.Module):
    """A representation and the decoder trained to invert it, ready for inference.

    Args:
        representation: Phi.
        decoder: the network trained to reconstruct images from Phi's features.
        image_size: the crop size the decoder was trained at.
        hparams: the plain values the checkpoint was built from.
    """

    def __init__(
        self,
        representation: nn.Module,
        decoder: nn.Module,
        image_size: int,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.representation = representation
        self.decoder = decoder
        self.image_size = image_size
        self.hparams = dict(hparams or {})
        self.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Inverter:
        """Rebuild representation and decoder from a checkpoint alone and load their weights."""
        checkpoint = load_checkpoint(path, map_location="cpu")
        hp = checkpoint.get("hyper_parameters", {})
        options = dict(hp.get("representation_options") or {})
        if "weights" in options:
            # The checkpoint carries Phi's weights (fine-tuned ones, for an autoencoder): the
            # file it was trained from need not exist here.
            options["weights"] = FROM_CHECKPOINT
        representation, decoder = build_networks(
            hp["representation"],
            options,
            hp["image_size"],
            hp.get("decoder_options"),
        )
        state = checkpoint["state_dict"]
        for prefix, module in (("representation.", representation), ("decoder.", decoder)):
            module.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        return cls(representation, decoder, hp["image_size"], hp).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters(), torch.empty(0)).device

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Phi(images) for images in the project convention (RGB in [0, 1], NCHW)."""
        return self.representation(images.to(self.device, torch.float32))

    @torch.inference_mode()
    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Reconstructions from features (raises ``ValueError`` naming the expected shape)."""
        if not features.is_floating_point():
            raise ValueError(f"features must be a floating-point tensor, got {features.dtype}")
        return self.decoder(features.to(self.device, torch.float32))

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions of images: features and decoding in one pass."""
        return self.decode(self.features(images))
