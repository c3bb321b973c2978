"""Streaming batches from webdataset shards (written by ``featinv.data.shard_writer``).

Training resamples shards (every DDP rank and loader worker draws its own stream; an epoch is
a number of batches); evaluation reads every sample exactly once, split across ranks and
workers. Images decode through ``featinv.data.images.decode_rgb``, as in the writer, and
undecodable samples are skipped and counted, never fatal.
"""

from __future__ import annotations

import copy
import glob
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import torch
import webdataset as wds

from featinv.data.bounded_tar import NoTrainingDataError, ShardDrought, bounded_webdataset
from featinv.data.images import (
    CorruptImageError,
    decode_rgb,
)
from featinv.data.procedural import SyntheticMix, TextureBank
from featinv.data.transforms import Box, EvalTransform, TrainTransform
from featinv.reliability import warn_sometimes
from featinv.representations import Representation

log = logging.getLogger(__name__)

#: A training stream stops when this many shards per shard file (plus DROUGHT_MIN_SHARDS) were
#: drawn in a row without a sample: resampling draws every file about once per len(urls).
DROUGHT_SHARDS_PER_URL = 20
DROUGHT_MIN_SHARDS = 100
#: ... or when this many samples in a row could not be decoded.
CORRUPT_IN_A_ROW = 10_000

#: The sample fields an image may be stored under, in the order they are looked up (those of
#: ``IMAGE_EXTENSIONS``: shards written by other tools keep the files' own extensions, which
#: webdataset lower-cases).
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm")


def image_field(sample: dict[str, Any]) -> bytes | None:
    """The encoded image of a webdataset sample (the first of ``IMAGE_FIELDS``), or ``None``."""
    return next((sample[k] for k in IMAGE_FIELDS if k in sample), None)


def expand_shards(pattern: str | list[str]) -> list[str]:
    """Expand brace patterns (``shard-{000000..000099}.tar``) and globs into existing files.

    Raises:
        FileNotFoundError: if nothing matches, naming the pattern.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    urls: list[str] = []
    for item in patterns:
        for expanded in braceexpand.braceexpand(item):
            if any(ch in expanded for ch in "*?["):
                urls += sorted(glob.glob(expanded))
            elif Path(expanded).exists() or "://" in expanded or expanded.startswith("pipe:"):
                urls.append(expanded)
    if not urls:
        raise FileNotFoundError(
            f"shard pattern {pattern!r} matches no files; write shards with "
            "`featinv-shards SRC OUT` and point to them, e.g. 'OUT/shard-{000000..000009}.tar'"
        )
    return urls


class SampleDecoder:
    """Turn a raw webdataset sample into ``{"image", "label", "key"[, "features"]}``.

    Corrupt samples become ``None``; they are logged with their shard and key and counted in
    ``skipped`` (per loader worker), so one bad file in a million never stops a run.

    For a representation that runs in the loader (SIFT), the features of the crop are added by
    the representation, from what it stored in the shard (``key.sift.npz`` for SIFT) when the
    crop is a plain window of the stored image, computed on the crop otherwise.
    """

    def __init__(
        self,
        transform: TrainTransform | EvalTransform,
        loader_representation: Representation | None = None,
    ) -> None:
        self.transform = transform
        self.loader_representation = loader_representation
        self.skipped = 0
        self.shard_errors = 0
        #: corrupt samples since the last good one (a training stream of only corrupt
        #: samples would otherwise spin for ever)
        self.skipped_in_a_row = 0
        #: watches the shards a training stream draws (``shard_pipeline`` sets it)
        self.drought: ShardDrought | None = None

    def handle_shard_error(self, error: Exception) -> bool:
        """webdataset handler: a truncated shard or a duplicate key is logged, counted, skipped."""
        if isinstance(error, NoTrainingDataError):
            return False
        self.shard_errors += 1
        if self.drought is not None:
            self.drought.last_error = repr(error)[:300]
        warn_sometimes(
            log,
            self.shard_errors,
            "skipping unreadable shard data: %r (%d shard error(s) so far in this worker)",
            error,
            self.shard_errors,
        )
        return True

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        key = sample.get("__key__", "?")
        try:
            data = image_field(sample)
            if data is None:
                raise CorruptImageError(f"no image field among {sorted(sample)}")
            crop, box = self.transform.crop(decode_rgb(data))
            label = int(sample["cls"]) if "cls" in sample else -1
        except (CorruptImageError, ValueError) as error:
            self.skipped += 1
            self.skipped_in_a_row += 1
            if self.drought is not None and self.skipped_in_a_row > CORRUPT_IN_A_ROW:
                raise NoTrainingDataError(
                    f"the last {CORRUPT_IN_A_ROW} training samples of {self.drought.pattern} "
                    f"were all undecodable (the last: {error})"
                ) from None
            warn_sometimes(
                log,
                self.skipped,
                "skipping corrupt sample %s in %s: %s (%d skipped so far in this worker)",
                key,
                sample.get("__url__", "?"),
                error,
                self.skipped,
            )
            return None
        self.skipped_in_a_row = 0
        out = {"image": crop, "label": label, "key": key}
        if self.loader_representation is not None:
            out["features"] = torch.from_numpy(self._loader_features(sample, crop, box))
        return out

    def _loader_features(self, sample: dict[str, Any], crop: np.ndarray, box: Box) -> np.ndarray:
        phi = self.loader_representation
        stored = sample.get(phi.stored_field) if phi.stored_field else None
        plain = box.scale == 1.0 and not box.flipped
        window = (box.top, box.left) if plain else None
        return phi.loader_features(crop, stored, window, sample.get("__key__", "?"))

    def generated(self, image: np.ndarray, key: str) -> dict[str, Any]:
        """A sample for an image made in the loader (procedural), with loader features."""
        out = {"image": image, "label": -1, "key": key}
        if self.loader_representation is not None:
            features = self.loader_representation.loader_features(image, key=key)
            out["features"] = torch.from_numpy(features)
        return out

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack decoded samples into a batch, with this worker's running count of skips.

        Images stay uint8 ``(N, 3, H, W)`` (stored channels-last): a quarter of the bytes to
        pass between processes and to the GPU, and no float pass in the worker. The data module
        converts them to float after the transfer to the device.
        """
        info = torch.utils.data.get_worker_info()
        pixels = np.stack([s["image"] for s in samples])  # (N, H, W, 3), the one copy
        batch = {
            "image": torch.from_numpy(pixels).permute(0, 3, 1, 2),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
            "key": [s["key"] for s in samples],
            # running counts of this loader worker (the module sums the workers' latest)
            "worker": info.id if info is not None else 0,
            "skipped": self.skipped,
            "shard_errors": self.shard_errors,
        }
        if "features" in samples[0]:
            batch["features"] = torch.stack([s["features"] for s in samples])
        return batch


def texture_bank(pattern: str | list[str], max_images: int = 64) -> TextureBank:
    """Palettes and texture patches for procedural images, from the first training images.

    Shards are read in sorted order and undecodable samples are passed over, so the bank is
    the same on every rank and every run.
    """
    images: list[np.ndarray] = []
    dataset = bounded_webdataset(
        expand_shards(pattern),
        shardshuffle=False,
        nodesplitter=None,
        workersplitter=None,
        empty_check=False,
        handler=wds.warn_and_continue,
    )
    for sample in dataset:
        data = image_field(sample)
        try:
            images.append(decode_rgb(data))
        except (CorruptImageError, TypeError):
            continue
        if len(images) == max_images:
            break
    if not images:
        raise ValueError(f"no decodable image in {pattern} to sample procedural colours from")
    return TextureBank.from_images(images)


class EvaluationPass(torch.utils.data.IterableDataset):
    """One read of evaluation shards per iteration, with skip counts that start at zero.

    The counts then describe one validation pass, whether the pipeline lives in the main
    process (num_workers=0, reused every epoch) or in fresh loader workers.
    """

    def __init__(self, pipeline: wds.WebDataset, decoder: SampleDecoder) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.decoder = decoder

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.decoder.skipped = self.decoder.shard_errors = 0
        yield from self.pipeline


def seed_shard_resampling(dataset: wds.WebDataset, seed: int) -> None:
    """Draw the shards of a resampled stream from ``seed``, each DDP rank and loader worker
    its own sequence (webdataset seeds them from the clock unless told otherwise)."""
    for stage in dataset.pipeline:
        if isinstance(stage, wds.ResampledShards):
            stage.seed, stage.deterministic = seed, True
            return
    raise RuntimeError("webdataset's pipeline has no ResampledShards stage to seed")


class WorkerShuffle:
    """webdataset's buffer shuffle, its generator seeded when a loader worker starts reading:
    from ``(seed, DDP rank, worker, pass)``, so that a seeded run reads its samples in the
    same order every time and no two workers alike; from fresh entropy when ``seed`` is
    ``None``."""

    def __init__(self, bufsize: int, seed: int | None) -> None:
        self.bufsize, self.seed = bufsize, seed
        self.passes = 0  # per process: a worker that reads the stream again shuffles anew

    def __call__(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        self.passes += 1
        entropy = self.seed if self.seed is not None else np.random.SeedSequence().entropy
        # a str seeds random.Random through SHA-512: the same in every process and run
        rng = random.Random(f"{entropy}/{rank}/{worker}/{self.passes}")
        return wds.filters.shuffle(self.bufsize, rng=rng)(samples)


def shard_pipeline(
    pattern: str | list[str],
    transform: TrainTransform | EvalTransform,
    batch_size: int,
    train: bool,
    shuffle_buffer: int = 1000,
    seed: int | None = None,
    loader_representation: Representation | None = None,
    synthetic: SyntheticMix | None = None,
) -> wds.WebDataset | EvaluationPass:
    """A batched webdataset pipeline over shards.

    Training resamples shards with replacement (every rank and worker draws independently, so
    an epoch is a number of batches) and shuffles samples in a buffer. Evaluation reads each
    shard once, split across nodes and workers, in order, and keeps the last partial batch.
    ``synthetic`` mixes procedural images into the decoded stream before batching.
    """
    urls = expand_shards(pattern)
    decoder = SampleDecoder(transform, loader_representation)
    if train:  # a resampled stream never ends by itself: stop it when no shard yields data
        decoder.drought = ShardDrought(
            pattern if isinstance(pattern, str) else ", ".join(pattern),
            limit=DROUGHT_SHARDS_PER_URL * len(urls) + DROUGHT_MIN_SHARDS,
        )
    dataset = bounded_webdataset(
        urls,
        drought=decoder.drought,
        resampled=train,
        shardshuffle=False,
        nodesplitter=None if train else wds.split_by_node,
        workersplitter=None if train else wds.split_by_worker,
        handler=decoder.handle_shard_error,
        empty_check=False,
        seed=seed,
    )
    if train:
        if seed is not None:
            seed_shard_resampling(dataset, seed)
        dataset = dataset.compose(WorkerShuffle(shuffle_buffer, seed))
    pipeline = dataset.map(decoder).select(lambda sample: sample is not None)
    if synthetic is not None:
        # generated images get their loader features (SIFT) from this pipeline's decoder
        mix = copy.copy(synthetic)
        mix.to_sample = decoder.generated
        pipeline = pipeline.compose(mix)
    pipeline = pipeline.batched(batch_size, collation_fn=decoder.collate, partial=not train)
    return pipeline if train else EvaluationPass(pipeline, decoder)
