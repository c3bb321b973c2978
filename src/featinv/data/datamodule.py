"""The LightningDataModule: streamed, batched shards for training and validation."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import lightning as L
import torch
import webdataset as wds

from featinv.data.bundled import bundled_shards
from featinv.data.images import pixels_to_float, scale_saturation
from featinv.data.loader_workers import init_loader_worker, loader_context
from featinv.data.procedural import MAX_SIZE, MIN_SIZE, DeadLeaves, SyntheticMix, check_fraction
from featinv.data.shards import expand_shards, shard_pipeline, texture_bank
from featinv.data.transforms import EvalTransform, TrainTransform
from featinv.reliability import OptionError, require
from featinv.representations import (
    build_representation,
    representation_class,
    training_image_size,
)

log = logging.getLogger(__name__)


class InversionDataModule(L.LightningDataModule):
    """Images for inversion training, streamed from webdataset shards.

    With no shards given, the bundled photo set is built (once, cached) and used: the embedded
    default that needs no download.

    Args:
        train_shards: pattern of the training shards (brace ranges or globs).
        val_shards: pattern of the validation shards.
        image_size: side of the square crops (random for training, central for validation);
            ``None``: the representation's ``training_image_size`` (64, or 128 px for a layer
            whose map is narrower than 8 at 64).
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
        seed: seed of the training stream: which shards and samples it reads in which order,
            the crops and the procedural images (each DDP rank and loader worker derives its
            own stream from it); ``None``: fresh entropy every run.
        crop_scale: ``(low, high)``: training crops are squares of this fraction of the
            image's shorter side (log-uniform), resized to ``image_size``; ``None``: windows of
            ``image_size`` pixels at the stored resolution.
        synthetic_fraction: share of each training batch made of procedural dead-leaves images
            (``featinv.data.procedural``), painted with colours and textures sampled from the
            training shards; 0 (default) trains on the shards alone, 1 on procedural images
            alone. Works with any shards, ImageNet's too.
        synthetic_bank_images: training images the procedural palettes and textures are
            sampled from (the first ones of the sorted training shards).
        saturation: ``(low, high)``: each training image's chroma (its difference from its
            luminance) is scaled by a factor drawn uniformly from this range, on the device
            after transfer; luminance, hence HOG, LBP and SIFT, is unchanged. A
            representation of grey images says nothing of colour, so this teaches the decoder
            how uncertain colour is (0 in the range: some images grey). ``(1, 1)``: off.
        colour_prior: ``(r, g, b)`` in [0, 1]: white-balance gains bring the mean colour of
            the training stream to this colour, after ``saturation``. A decoder of a
            colourless representation predicts colour from its prior alone: this makes that
            prior a broad statistic (e.g. ImageNet's mean colour, 0.485, 0.456, 0.406)
            instead of the tilt of a few training photos. ``None``: off.
        representation: the model's representation (linked by the CLI); if it runs in the
            loader (SIFT), batches carry its ``features``.
        representation_options: its options (linked by the CLI).
    """

    def __init__(
        self,
        train_shards: str | None = None,
        val_shards: str | None = None,
        image_size: int | None = 64,
        val_resize: int | None = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        batches_per_epoch: int = 100,
        samples_per_epoch: int | None = None,
        shuffle_buffer: int = 1000,
        flip: bool = True,
        seed: int | None = None,
        crop_scale: tuple[float, float] | None = None,
        synthetic_fraction: float = 0.0,
        synthetic_bank_images: int = 64,
        saturation: tuple[float, float] = (1.0, 1.0),
        colour_prior: tuple[float, float, float] | None = None,
        representation: str = "hog",
        representation_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if image_size is None:
            image_size = training_image_size(representation, representation_options)
        _check_options(dict(locals()))
        self.colour_sum: torch.Tensor | None = None
        self.colour_count = 0
        self.save_hyperparameters()
        self.hparams["image_size"] = image_size  # as resolved (LightningCLI saves its config)
        self.train_shards = train_shards
        self.val_shards = val_shards
        try:
            runs_in_loader = representation_class(representation).runs_in_loader
        except ValueError as error:
            raise OptionError(f"data.representation: {error}") from None
        # Only a representation computed in the loader workers is built here (SIFT, cheap);
        # one computed in the step (AlexNet: a weights file) is never built twice.
        self.loader_representation = (
            build_representation(representation, **(representation_options or {}))
            if runs_in_loader
            else None
        )

    def prepare_data(self) -> None:
        if self.train_shards is None and self.val_shards is None:
            bundled_shards()

    def setup(self, stage: str | None = None) -> None:
        if self.train_shards is None and self.val_shards is None:
            patterns = bundled_shards()
            self.train_shards, self.val_shards = patterns["train"], patterns["val"]
            log.info("training on the bundled photo set: %s", patterns)

    def check_sources(self) -> None:
        """Fail early, naming the option, if a shard pattern is missing or matches nothing."""
        for pattern in (self.train_shards, self.val_shards):
            if pattern is not None:
                expand_shards(pattern)
        if (self.train_shards is None) != (self.val_shards is None):
            given, missing = (
                ("data.train_shards", "data.val_shards")
                if self.val_shards is None
                else ("data.val_shards", "data.train_shards")
            )
            raise OptionError(
                f"{given} is set but {missing} is not: give both (the bundled photos are used "
                "only when neither is set)"
            )

    def train_dataloader(self) -> wds.WebLoader:
        if self.train_shards is None:
            raise OptionError("no training shards: set data.train_shards")
        hp = self.hparams
        synthetic = None
        if hp.synthetic_fraction > 0:
            bank = texture_bank(self.train_shards, hp.synthetic_bank_images)
            synthetic = SyntheticMix(
                DeadLeaves(hp.image_size, bank), hp.synthetic_fraction, seed=hp.seed
            )
        crop_scale = tuple(hp.crop_scale) if hp.crop_scale is not None else None
        pipeline = shard_pipeline(
            self.train_shards,
            TrainTransform(hp.image_size, flip=hp.flip, seed=hp.seed, crop_scale=crop_scale),
            hp.batch_size,
            train=True,
            shuffle_buffer=hp.shuffle_buffer,
            seed=hp.seed,
            loader_representation=self.loader_representation,
            synthetic=synthetic,
        )
        loader = wds.WebLoader(
            pipeline,
            batch_size=None,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            worker_init_fn=self._worker_init(),
            multiprocessing_context=loader_context(hp.num_workers),
        )
        # Resampled shards never end: an epoch is a fixed number of batches per process.
        batches = self.batches_per_rank()
        # with_epoch fixes the epoch, so the length Lightning reads is true (silent: we know).
        return loader.with_epoch(batches).with_length(batches, silent=True)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """On the device: uint8 pixels to float in [0, 1] (the loaders ship a quarter of the
        bytes), then the colour augmentation of training batches (validation is untouched)."""
        batch["image"] = pixels_to_float(batch["image"])
        if self.trainer.training:
            batch["image"] = self.augment_colour(batch["image"])
        return batch

    def augment_colour(self, images: torch.Tensor) -> torch.Tensor:
        """A training batch's colour augmentation, on float pixels in [0, 1]: each image's
        chroma scaled by a factor drawn from ``saturation``, then the ``colour_prior`` gains.
        What a decoder trains on is what this returns (a benchmark reading the training
        stream outside a trainer calls it too)."""
        hp = self.hparams
        if tuple(hp.saturation) != (1.0, 1.0):
            images = scale_saturation(images, *hp.saturation)
        if hp.colour_prior is not None:
            images = self._balance(images)
        return images

    def _balance(self, images: torch.Tensor) -> torch.Tensor:
        """Per-channel gains that bring the training stream's mean colour to ``colour_prior``.

        The stream's mean colour is a running mean over every batch so far (before the
        gains), so the gains settle within a few batches and then stay put.
        """
        colours = images.mean(dim=(2, 3)).sum(dim=0).double().cpu()
        self.colour_sum = colours if self.colour_sum is None else self.colour_sum + colours
        self.colour_count += images.shape[0]
        mean = (self.colour_sum / self.colour_count).clamp_min(1e-3)
        prior = torch.tensor(self.hparams.colour_prior, dtype=torch.float64)
        gains = (prior / mean).to(images).view(1, 3, 1, 1)
        return (images * gains).clamp_(0, 1)

    def state_dict(self) -> dict[str, Any]:
        # the running mean colour behind the gains, so a resumed run balances as before
        return {"colour_sum": self.colour_sum, "colour_count": self.colour_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.colour_sum = state_dict.get("colour_sum")
        self.colour_count = state_dict.get("colour_count", 0)

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

    def _worker_init(self) -> functools.partial[None]:
        """The loader workers' start: on a CPU-only run they yield the cores to the step."""
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        return functools.partial(init_loader_worker, yield_cpu=getattr(device, "type", "") == "cpu")

    def val_dataloader(self) -> wds.WebLoader:
        if self.val_shards is None:
            raise OptionError("no validation shards: set data.val_shards")
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
            raise OptionError(
                f"the validation set {self.val_shards} has {shards} shard(s) for {processes} "
                "processes, so some would validate on nothing: write it into at least "
                f"{processes} shards (featinv-shards ... --samples-per-shard N with N at most "
                "images / processes)"
            )
        # A worker without a shard would sit idle; never start more workers than shards.
        workers = min(hp.num_workers, max(1, shards // processes))
        return wds.WebLoader(
            pipeline,
            batch_size=None,
            num_workers=workers,
            worker_init_fn=self._worker_init(),
            multiprocessing_context=loader_context(workers),
        )


def _check_options(values: dict[str, Any]) -> None:
    """Refuse impossible data options before anything is built, naming the option."""
    size = values["image_size"]
    require(size >= 8, "data.image_size", "at least 8 pixels", size)
    for name in ("batch_size", "batches_per_epoch", "synthetic_bank_images"):
        require(values[name] >= 1, f"data.{name}", "at least 1", values[name])
    for name in ("val_batch_size", "samples_per_epoch"):
        require(
            values[name] is None or values[name] >= 1,
            f"data.{name}",
            "null or at least 1",
            values[name],
        )
    for name in ("num_workers", "shuffle_buffer"):
        require(values[name] >= 0, f"data.{name}", "at least 0", values[name])
    val_resize = values["val_resize"]
    require(
        val_resize is None or val_resize >= size,
        "data.val_resize",
        f"null or at least data.image_size ({size})",
        val_resize,
    )
    seed = values["seed"]
    require(seed is None or seed >= 0, "data.seed", "a non-negative integer or null", seed)
    scale = values["crop_scale"]
    require(
        scale is None or (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1),
        "data.crop_scale",
        "[low, high] with 0 < low <= high <= 1, or null",
        scale,
    )
    fraction = values["synthetic_fraction"]
    try:
        check_fraction(fraction)
    except ValueError as error:
        raise OptionError(str(error)) from None
    if fraction > 0 and not MIN_SIZE <= size <= MAX_SIZE:
        raise OptionError(
            f"procedural images can be {MIN_SIZE} to {MAX_SIZE} pixels wide: "
            f"data.image_size {size} needs data.synthetic_fraction 0"
        )
    saturation = values["saturation"]
    require(
        len(saturation) == 2 and 0 <= saturation[0] <= saturation[1],
        "data.saturation",
        "[low, high] with 0 <= low <= high",
        saturation,
    )
    prior = values["colour_prior"]
    require(
        prior is None or (len(prior) == 3 and all(0 < c < 1 for c in prior)),
        "data.colour_prior",
        "[r, g, b] with values in (0, 1), or null",
        prior,
    )
