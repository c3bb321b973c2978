"""Features at a sensible scale: per-channel standardization, estimated from the first batches.

A trained network's features are large and heavy-tailed (a VGG-16's conv1_2 has a standard
deviation of about 175 and values past 1500 on photos at 64 px; conv4_3 about 15): fed as
they are, Adam's first steps on the decoder overshoot and the loss explodes. The decoder's
first layer therefore standardizes each channel (each dimension of a vector) with a mean and
standard deviation measured on the features of the first ``batches`` training batches, then
frozen. Being part of the decoder, the statistics are saved with it (checkpoints and exported
files) and applied identically wherever the decoder runs: training, validation, ``Inverter``,
hybrid refinement, evaluation. Under DDP, Lightning's buffer broadcast keeps rank 0's on
every process. A decoder file from before this layer existed loads with the identity.
"""

from __future__ import annotations

import torch

from featinv.decoders.blocks import AddedPart


class FeatureStandardizer(AddedPart):
    """``(features - mean_c) / std_c`` per channel ``c`` (dimension 1), statistics measured
    on the first ``batches`` batches seen in training mode and then frozen.

    Args:
        channels: size of dimension 1 of the features.
        batches: training batches to measure on (0: the identity, never measured).
        floor: a channel's standard deviation is at least ``floor`` times the mean of all
            channels' (a dead channel is not blown up).
    """

    def __init__(self, channels: int, batches: int = 20, floor: float = 1e-2) -> None:
        super().__init__()
        self.batches, self.floor = batches, floor
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        #: batches measured so far (== ``batches``: frozen)
        self.register_buffer("measured", torch.zeros((), dtype=torch.long))
        self.register_buffer("sums", torch.zeros(3, channels, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training and int(self.measured) < self.batches:
            self._measure(features.detach())
        shape = (1, -1) + (1,) * (features.dim() - 2)
        mean, std = self.mean.view(shape), self.std.view(shape)
        return (features - mean.to(features.dtype)) / std.to(features.dtype)

    @torch.no_grad()
    def _measure(self, features: torch.Tensor) -> None:
        values = features.transpose(0, 1).reshape(features.shape[1], -1).double()
        self.sums[0] += values.shape[1]
        self.sums[1] += values.sum(dim=1)
        self.sums[2] += values.pow(2).sum(dim=1)
        count = self.sums[0].clamp_min(1)
        mean = self.sums[1] / count
        std = (self.sums[2] / count - mean.pow(2)).clamp_min(0).sqrt()
        std = torch.maximum(std, self.floor * std.mean() + 1e-12)
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        self.measured += 1

    def to_identity(self) -> None:
        """A decoder saved before this layer existed: its features went in unscaled."""
        self.mean.zero_()
        self.std.fill_(1.0)
        self.measured.fill_(self.batches)

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}, batches={self.batches}"
