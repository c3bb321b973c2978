"""The LightningDataModule: streamed, batched shards for training and validation."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import webdataset as wds

from featinv.data.bundled import bundled_shards
from featinv.data.shards import expand_shards, shard_pipeline
from featinv.data.transforms import EvalTransform, TrainTransform
from featinv.representations import build_representation

log = logging.getLogger(__name__)


class InversionDataModule(L.LightningDataModule):
    """Images for inversion training, streamed from webdataset shards.

    With no shards given, the bundled photo set is built (once, cached) and used: the embedded
    default that needs no download.

    Args:
        train_shards: pattern of the training shards (brace ranges or globs).
        val_shards: pattern of the validation shards.
        image_size: side of the square crops (random for training, central for validation).
        val_resize: shorter side validation images are resized to before the central crop
            (default: ``image_size``, i.e. the whole image is seen).
        batch_size: training batch size (paper: 64).
        val_batch_size: validation batch size (default: ``batch_size``).
        num_workers: loader worker processes.
        batches_per_epoch: an epoch of resampled shards, counted in batches per process.
        samples_per_epoch: alternatively, the epoch in samples over all processes (ImageNet:
            1281167); each of the W processes then runs ``ceil(samples / (batch_size * W))``
            batches, so an epoch means the same data whatever the number of GPUs.
        shuffle_buffer: samples held in the shuffle buffer.
        flip: random horizontal flips for training (off to use SIFT keypoints stored in the
            shards as they are; flipped crops get their SIFT computed on the fly).
        seed: seed of the crops (each worker derives its own stream from it).
        representation: the model's representation (linked by the CLI); if it runs in the
            loader (SIFT), batches carry its ``features``.
        representation_options: its options (linked by the CLI).
    """

    def __init__(
        self,
        train_shards: str | None = None,
        val_shards: str | None = None,
        image_size: int = 64,
        val_resize: int | None = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        batches_per_epoch: int = 100,
        samples_per_epoch: int | None = None,
        shuffle_buffer: int = 1000,
        flip: bool = True,
        seed: int | None = None,
        representation: str = "hog",
        representation_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_shards = train_shards
        self.val_shards = val_shards
        phi = build_representation(representation, **(representation_options or {}))
        self.loader_representation = phi if phi.runs_in_loader else None

    def prepare_data(self) -> None:
        if self.train_shards is None and self.val_shards is None:
            bundled_shards()

    def setup(self, stage: str | None = None) -> None:
        if self.train_shards is None and self.val_shards is None:
            patterns = bundled_shards()
            self.train_shards, self.val_shards = patterns["train"], patterns["val"]
            log.info("training on the bundled photo set: %s", patterns)

    def check_sources(self) -> None:
        """Fail early, with the pattern in the message, if a shard pattern matches nothing."""
        for pattern in (self.train_shards, self.val_shards):
            if pattern is not None:
                expand_shards(pattern)

    def train_dataloader(self) -> wds.WebLoader:
        if self.train_shards is None:
            raise ValueError("no training shards: set data.train_shards")
        hp = self.hparams
        pipeline = shard_pipeline(
            self.train_shards,
            TrainTransform(hp.image_size, flip=hp.flip, seed=hp.seed),
            hp.batch_size,
            train=True,
            shuffle_buffer=hp.shuffle_buffer,
            seed=hp.seed,
            loader_representation=self.loader_representation,
        )
        loader = wds.WebLoader(
            pipeline,
            batch_size=None,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )
        # Resampled shards never end: an epoch is a fixed number of batches per process.
        batches = self.batches_per_rank()
        return loader.with_epoch(batches).with_length(batches)

    @property
    def processes(self) -> int:
        """DDP processes sharing the data (1 before a trainer is attached)."""
        return self.trainer.world_size if self.trainer is not None else 1

    def batches_per_rank(self) -> int:
        """Training batches each process runs per epoch."""
        hp = self.hparams
        if hp.samples_per_epoch is None:
            return hp.batches_per_epoch
        return max(1, math.ceil(hp.samples_per_epoch / (hp.batch_size * self.processes)))

    def val_dataloader(self) -> wds.WebLoader:
        if self.val_shards is None:
            raise ValueError("no validation shards: set data.val_shards")
        hp = self.hparams
        pipeline = shard_pipeline(
            self.val_shards,
            EvalTransform(hp.image_size, hp.val_resize),
            hp.val_batch_size or hp.batch_size,
            train=False,
            loader_representation=self.loader_representation,
        )
        # Validation splits whole shards across processes, then across their workers: every
        # sample is seen once per epoch, and the metric is reduced across processes.
        shards, processes = len(expand_shards(self.val_shards)), self.processes
        if shards < processes:
            raise ValueError(
                f"the validation set {self.val_shards} has {shards} shard(s) for {processes} "
                "processes, so some would validate on nothing: write it into at least "
                f"{processes} shards (featinv-shards ... --samples-per-shard N with N at most "
                "images / processes)"
            )
        # A worker without a shard would sit idle; never start more workers than shards.
        workers = min(hp.num_workers, max(1, shards // processes))
        return wds.WebLoader(pipeline, batch_size=None, num_workers=workers)
