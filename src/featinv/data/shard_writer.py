"""``featinv-shards``: write an image folder (ImageNet train or val) into webdataset shards.

A sample is ``key.jpg`` (RGB, shorter side resized; ``key.png`` with ``--format png``), plus
``key.cls`` (the class index as text) when the source has labels and ``key.sift.npz`` with
``--features sift``. Every image is decoded through ``featinv.data.images.decode_rgb``, so all
image modes are handled the same way, and undecodable files are skipped and counted.

The writer is built for ImageNet's 1.28M files:

* **parallel**: shards are independent jobs spread over ``workers`` processes;
* **deterministic**: shard ``i`` holds sources ``[i*n, (i+1)*n)`` in sorted order, tar headers
  carry a fixed time and owner, so the same input gives byte-identical shards, whatever the
  number of workers;
* **resumable**: a shard is written under a hidden temporary name and renamed into place only
  once complete, then recorded in ``OUT/.featinv-shards/``. A rerun of the same command skips
  recorded shards; a killed run never leaves a half-written file under a shard's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from tqdm.auto import tqdm

from featinv.data.images import CorruptImageError, decode_rgb, encode_image, resize_shorter_side
from featinv.data.sources import SourceImage, find_sources, printable
from featinv.reliability import atomic_write
from featinv.representations import (
    Representation,
    available_representations,
    build_representation,
    representation_class,
)

log = logging.getLogger(__name__)

#: Bumped when the sample layout changes: shards of another version are never mixed.
WRITER_VERSION = 1
#: Per-shard completion records and the run's settings live here, next to the shards.
PROGRESS_DIR = ".featinv-shards"
#: Fixed tar header fields: the same samples always give the same bytes.
TAR_HEADER = {"mtime": 0.0, "user": "featinv", "group": "featinv"}


@dataclass
class ShardSummary:
    """What a shard-writing run did, over all its shards (resumed ones included)."""

    shards: list[str] = field(default_factory=list)
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    resumed: int = 0
    layout: str = ""

    def __str__(self) -> str:
        lines = [f"wrote {self.written} samples into {len(self.shards)} shard(s)"]
        if self.resumed:
            lines.append(f"{self.resumed} shard(s) were already complete and kept (resumed)")
        if self.layout:
            lines.append(f"source layout: {self.layout}")
        lines.append(f"skipped {len(self.skipped)} file(s) that could not be decoded")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        if self.renamed:
            lines.append(f"renamed {len(self.renamed)} duplicate key(s), e.g. {self.renamed[0]}")
        if self.class_counts:
            counts = sorted(self.class_counts.items(), key=lambda item: (item[1], item[0]))
            values = [n for _, n in counts]
            lines.append(
                f"{len(self.classes) or len(counts)} classes; samples per class: min "
                f"{values[0]} ({counts[0][0]}), median {int(np.median(values))}, "
                f"max {values[-1]} ({counts[-1][0]})"
            )
            if self.classes:
                empty = [name for name in self.classes if name not in self.class_counts]
                if empty:
                    lines.append(f"  {len(empty)} class(es) have no samples, e.g. {empty[:5]}")
            if len(counts) <= 20:
                lines += [f"  {name}: {n}" for name, n in sorted(self.class_counts.items())]
        return "\n".join(lines)


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: its sources and how to encode them (picklable, for workers)."""

    images: tuple[SourceImage, ...]
    shard: Path
    record: Path
    size: int
    image_format: str
    quality: int
    features: str | None
    classes: tuple[str, ...]


def storing_representation(name: str) -> Representation:
    """The loader representation ``name``, which stores per-image features in shards.

    Raises:
        ValueError: an unknown name, or one that stores nothing, naming those that do.
    """
    able = [
        n
        for n in available_representations()
        if representation_class(n).runs_in_loader and representation_class(n).stored_field
    ]
    if name not in able:
        raise ValueError(
            f"features must name a representation computed in the loader "
            f"({', '.join(able) or 'none'}), got {name!r}"
        )
    return build_representation(name)


def _encode_sample(image: SourceImage, job: ShardJob) -> dict[str, Any]:
    array = resize_shorter_side(decode_rgb(image.path), job.size)
    encoded = encode_image(array, job.image_format, job.quality)
    sample: dict[str, Any] = {"__key__": image.key, job.image_format: encoded}
    if job.features is not None:
        # features of the decoded stored pixels, exactly what the reader will crop
        phi = storing_representation(job.features)
        sample[phi.stored_field] = phi.encode_stored(decode_rgb(encoded))
    if image.label is not None:
        sample["cls"] = str(image.label).encode()
    return sample


def write_shard(job: ShardJob) -> dict[str, Any]:
    """Write one shard atomically and record it; return the record.

    The tar is written under a hidden name, flushed to disk and renamed to the shard's name,
    so a shard file is either absent or complete. The record (counts, size, SHA-256) is
    written after the rename: a shard without a record is simply written again on resume.
    """
    skipped: list[tuple[str, str]] = []
    counts: Counter[str] = Counter()
    written = 0
    # the tar's end-of-archive is written (TarWriter closes) before the file is renamed
    with (
        atomic_write(job.shard) as stream,
        wds.TarWriter(stream, encoder=False, **TAR_HEADER) as sink,
    ):
        for image in job.images:
            try:
                sample = _encode_sample(image, job)
            except CorruptImageError as error:
                skipped.append((printable(image.path), str(error)))
                log.warning("skipping %s: %s", image.path, error)
                continue
            sink.write(sample)
            written += 1
            if image.label is not None:
                name = job.classes[image.label] if job.classes else str(image.label)
                counts[name] += 1
    with open(job.shard, "rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    record = {
        "shard": job.shard.name,
        "bytes": job.shard.stat().st_size,
        "sha256": digest,
        "written": written,
        "skipped": skipped,
        "class_counts": dict(counts),
    }
    with atomic_write(job.record) as stream:
        stream.write(json.dumps(record).encode())
    return record


def _completed(job: ShardJob) -> dict[str, Any] | None:
    """The record of a shard finished by an earlier run, if the file is there and whole."""
    if not (job.record.is_file() and job.shard.is_file()):
        return None
    try:
        record = json.loads(job.record.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("bytes") == job.shard.stat().st_size else None


def _init_worker() -> None:
    torch.set_num_threads(1)  # one thread per process: the parallelism is across shards


def _check_settings(progress: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into a folder written with other settings or another source."""
    manifest = progress / "manifest.json"
    if manifest.is_file():
        previous = json.loads(manifest.read_text())
        differing = sorted(k for k in settings if previous.get(k) != settings[k])
        if differing:
            raise ValueError(
                f"{progress.parent} holds shards written with other settings "
                f"({', '.join(differing)} differ): write into a new folder, or delete it"
            )
    else:
        with atomic_write(manifest) as stream:
            stream.write(json.dumps(settings, indent=1).encode())


def write_shards(
    source: str | Path,
    output: str | Path,
    size: int = 256,
    samples_per_shard: int = 1000,
    prefix: str = "shard",
    quality: int = 95,
    progress: bool = True,
    image_format: str = "jpg",
    features: str | None = None,
    workers: int = 1,
    labels_file: str | Path | None = None,
    classes: str | Path | list[str] | None = None,
) -> ShardSummary:
    """Write the images of a folder into webdataset tar shards, in parallel and resumably.

    Args:
        source: an image folder: class folders (ImageNet train), or flat (ImageNet val).
        output: the folder that receives ``{prefix}-000000.tar``, ..., ``classes.json`` and
            ``summary.json``. Rerunning into it continues an interrupted run.
        size: the shorter side of every stored image (resized with antialiasing).
        samples_per_shard: source images per tar file.
        prefix: shard file name prefix.
        quality: JPEG quality of the stored images.
        progress: show a progress bar (shards done, of all).
        image_format: ``"jpg"`` (compact, the default) or ``"png"`` (lossless).
        features: the name of a loader representation whose per-image data is stored too
            (``"sift"``: VLFeat keypoints as ``key.sift.npz``), computed once here instead of
            in every epoch's loader workers.
        workers: processes writing shards at the same time.
        labels_file: labels of a flat folder (see ``featinv.data.sources``).
        classes: class names to index the labels by (list or ``classes.json``).
    """
    if features is not None:
        storing_representation(features)
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image format must be 'jpg' or 'png', got {image_format!r}")
    if samples_per_shard < 1 or workers < 1:
        raise ValueError("samples_per_shard and workers must be at least 1")
    sources = find_sources(source, labels_file, classes)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    listing = "\n".join(f"{i.key}\t{i.label}" for i in sources.images)
    _check_settings(
        out / PROGRESS_DIR,
        {
            "version": WRITER_VERSION,
            "size": size,
            "samples_per_shard": samples_per_shard,
            "prefix": prefix,
            "quality": quality,
            "image_format": image_format,
            "features": features,
            "classes": sources.classes,
            "sources_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        },
    )
    for stale in out.glob(f".{prefix}-*.tar.*.partial"):
        stale.unlink(missing_ok=True)  # left by a killed run; never read as a shard
    jobs = [
        ShardJob(
            images=tuple(sources.images[start : start + samples_per_shard]),
            shard=out / f"{prefix}-{n:06d}.tar",
            record=out / PROGRESS_DIR / f"{prefix}-{n:06d}.json",
            size=size,
            image_format=image_format,
            quality=quality,
            features=features,
            classes=tuple(sources.classes),
        )
        for n, start in enumerate(range(0, len(sources.images), samples_per_shard))
    ]
    records = {job.shard: _completed(job) for job in jobs}
    resumed = sum(record is not None for record in records.values())
    pending = [job for job in jobs if records[job.shard] is None]
    bar = tqdm(
        total=len(jobs), initial=resumed, desc="writing shards", unit="shard", disable=not progress
    )
    for job, record in _run(pending, workers):
        records[job.shard] = record
        bar.update()
    bar.close()

    summary = _summarize([records[job.shard] for job in jobs], out)
    summary.classes, summary.renamed = sources.classes, sources.renamed
    summary.resumed, summary.layout = resumed, sources.layout
    for name, content in (("classes.json", sources.classes), ("summary.json", asdict(summary))):
        with atomic_write(out / name) as stream:
            stream.write(json.dumps(content, indent=1).encode())
    return summary


def _run(jobs: list[ShardJob], workers: int) -> Iterable[tuple[ShardJob, dict[str, Any]]]:
    """Write shards in this process or in a pool; the first failure stops the run."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, write_shard(job)
        return
    with ProcessPoolExecutor(min(workers, len(jobs)), initializer=_init_worker) as pool:
        futures = {pool.submit(write_shard, job): job for job in jobs}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in remaining:
                        other.cancel()
                    raise future.exception()  # finished shards stay recorded for a rerun
                yield futures[future], future.result()


def _summarize(records: list[dict[str, Any]], out: Path) -> ShardSummary:
    counts: Counter[str] = Counter()
    summary = ShardSummary()
    for record in records:
        summary.shards.append(str(out / record["shard"]))
        summary.written += record["written"]
        summary.skipped += [tuple(item) for item in record["skipped"]]
        counts.update(record["class_counts"])
    summary.class_counts = dict(sorted(counts.items()))
    return summary


def write_samples(
    samples: Iterable[dict[str, Any]],
    output: str | Path,
    prefix: str = "shard",
    samples_per_shard: int = 1000,
) -> list[str]:
    """Write ready-made webdataset samples (``__key__`` plus encoded fields) into tar shards."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(
        str(out / f"{prefix}-%06d.tar"), maxcount=samples_per_shard, verbose=0, **TAR_HEADER
    ) as sink:
        for sample in samples:
            sink.write(sample)
        count = sink.shard
    return [str(out / f"{prefix}-{i:06d}.tar") for i in range(count)]
