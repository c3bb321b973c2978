"""Fast feed-forward inversion from a trained checkpoint, without Lightning.

    inverter = Inverter.from_checkpoint("checkpoints/hog/best.ckpt", device="cuda")
    reconstructions = inverter.reconstruct(images)   # features computed inside
    reconstructions = inverter.decode(features)      # features you already have

One forward pass per batch, in inference mode (Dosovitskiy & Brox: about 5 ms per image on a
GPU, against seconds to minutes for optimization-based inversion).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featinv.baseline.hybrid import refine
from featinv.checkpoint import load_checkpoint, networks_from_checkpoint
from featinv.exported import networks_from_export
from featinv.ops import match_size


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
        #: sum and count of the training images, when the checkpoint kept them: the training
        #: data's mean image, the constant a decoder must beat (kept when saved again)
        self.train_image_sum: torch.Tensor | None = None
        self.train_image_count = 0
        self.eval()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        trust_checkpoint: bool = False,
        architecture: str | Callable[..., nn.Module] | None = None,
    ) -> Inverter:
        """Rebuild representation and decoder from a checkpoint alone and load their weights.

        The file is read without executing anything (``weights_only``), and nothing it names
        is imported: a checkpoint that needs more (a pickle that names code, a network given
        by import path) is refused unless ``trust_checkpoint`` (only for files you trust) or,
        for a network, unless you pass its ``architecture`` (an import path or a factory).
        """
        checkpoint = load_checkpoint(path, map_location="cpu", trust=trust_checkpoint)
        representation, decoder, hp = networks_from_checkpoint(
            checkpoint, str(path), architecture, trust_checkpoint
        )
        inverter = cls(representation, decoder, hp["image_size"], hp).to(device)
        entry = checkpoint["featinv"]
        total, count = entry.get("train_image_sum"), entry.get("train_image_count", 0)
        if isinstance(total, torch.Tensor) and total.dim() == 3 and int(count) > 0:
            inverter.train_image_sum, inverter.train_image_count = total, int(count)
        return inverter

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        trust_checkpoint: bool = False,
        representation_weights: str | None = None,
        architecture: str | Callable[..., nn.Module] | None = None,
    ) -> Inverter:
        """A decoder from a checkpoint (``.ckpt``) or an exported file (``.safetensors``).

        Args:
            trust_checkpoint: load what the file names even if that runs code (a pickle that
                names code, a network given by import path): only for files you trust.
            representation_weights: for an exported file without its representation's
                weights (a third party's network, e.g. AlexNet): the weights file to use.
            architecture: the network of a file whose representation is a network given by
                import path: that path or the factory function itself (nothing the file names
                is imported without it or ``trust_checkpoint``).
        """
        if Path(path).suffix == ".safetensors":
            representation, decoder, hp = networks_from_export(
                path, representation_weights, architecture, trust_checkpoint
            )
            return cls(representation, decoder, int(hp["image_size"]), hp).to(device)
        return cls.from_checkpoint(path, device, trust_checkpoint, architecture)

    def train_mean_image(self) -> torch.Tensor | None:
        """The training data's mean image ``(3, S, S)``, or ``None`` (an exported file, or a
        checkpoint written before training saw an image)."""
        if self.train_image_sum is None:
            return None
        return (self.train_image_sum / self.train_image_count).float()

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

    def refine(
        self, images_or_features: torch.Tensor, iterations: int = 50, seed: int = 0
    ) -> torch.Tensor:
        """Hybrid inversion: decode, then refine by Algorithm 1 towards the same features.

        Takes images (``(B, 3, H, W)``) or features of Phi's shape at the training size S;
        returns reconstructions at the images' size (``(B, 3, S, S)`` from features), in
        [0, 1]-range pixels (not clamped).
        Feature error comes close to the optimization's at a fraction of its iterations
        (``featinv.baseline.hybrid``).

        Raises:
            ValueError: for a representation without gradients (LBP, SIFT).
        """
        given = images_or_features.to(self.device, torch.float32)
        size = (self.image_size, self.image_size)
        is_features = tuple(given.shape[1:]) == tuple(self.representation.output_shape(size))
        features = given if is_features else self.features(given)
        size = size if is_features else tuple(given.shape[-2:])
        start = match_size(self.decode(features).float(), size).clamp(0, 1)
        result = refine(
            self.representation,
            start,
            images=None if is_features else given,
            features=features if is_features else None,
            iterations=iterations,
            seed=seed,
        )
        return result.reconstructions
