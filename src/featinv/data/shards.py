"""webdataset shards: writing an image folder into tar shards, and streaming batches back.

A sample is ``key.jpg`` (RGB JPEG, shorter side resized) and, when the source folder has
ImageNet's one-folder-per-class layout, ``key.cls`` (the class index as text). Writing and
reading both decode through ``featinv.data.images.decode_rgb``, so every image mode is handled
the same way and undecodable files are skipped and counted, never fatal.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import torch
import webdataset as wds
from tqdm.auto import tqdm

from featinv.data.images import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    decode_rgb,
    encode_image,
    list_images,
    resize_shorter_side,
    to_tensor,
)
from featinv.data.transforms import Box, EvalTransform, TrainTransform
from featinv.representations.sift import SparseSIFT, detect_sift, grey_255, pack_keypoints

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- writing


@dataclass
class ShardSummary:
    """What a shard-writing run did."""

    shards: list[str] = field(default_factory=list)
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"wrote {self.written} samples into {len(self.shards)} shard(s)"]
        if self.classes:
            lines.append(f"{len(self.classes)} classes")
        lines.append(f"skipped {len(self.skipped)} file(s) that could not be decoded")
        if self.renamed:
            lines.append(f"renamed {len(self.renamed)} duplicate key(s), e.g. {self.renamed[0]}")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def sample_key(relative: Path) -> str:
    """A webdataset key from a relative path: no dots (they split extensions) and no slashes."""
    return str(relative.with_suffix("")).replace("/", "__").replace(".", "_")


def find_source_images(source: str | Path) -> tuple[list[tuple[Path, int | None]], list[str]]:
    """Images below ``source`` with their class index, and the class names.

    The class-folder layout (every top-level entry holding images is a folder) gives labels in
    the sorted order of the folder names, as torchvision's ``ImageFolder`` does.

    Raises:
        FileNotFoundError: if ``source`` is not a folder.
        ValueError: if it holds no images.
    """
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    images = list_images(root)
    if not images:
        raise ValueError(
            f"no images found in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    top_level = {p.relative_to(root).parts[0] for p in images}
    if all((root / name).is_dir() for name in top_level):
        classes = sorted(top_level)
        index = {name: i for i, name in enumerate(classes)}
        return [(p, index[p.relative_to(root).parts[0]]) for p in images], classes
    return [(p, None) for p in images], []


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
        str(out / f"{prefix}-%06d.tar"), maxcount=samples_per_shard, verbose=0
    ) as sink:
        for sample in samples:
            sink.write(sample)
        count = sink.shard
    return [str(out / f"{prefix}-{i:06d}.tar") for i in range(count)]


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
) -> ShardSummary:
    """Write the images of a folder into webdataset tar shards.

    Args:
        source: an image folder, flat or with one sub-folder per class.
        output: the folder that receives ``{prefix}-000000.tar``, ... and ``classes.json``.
        size: the shorter side of every stored image (resized with antialiasing).
        samples_per_shard: samples per tar file.
        prefix: shard file name prefix.
        quality: JPEG quality of the stored images.
        progress: show a progress bar.
        image_format: ``"jpg"`` (compact, the default) or ``"png"`` (lossless).
        features: ``"sift"`` also stores VLFeat SIFT keypoints (``key.sift.npz``), computed
            once here instead of in every epoch's loader workers.
    """
    if features not in (None, "sift"):
        raise ValueError(f"features must be None or 'sift', got {features!r}")
    files, classes = find_source_images(source)
    summary = ShardSummary(classes=classes)
    root = Path(source)

    used: set[str] = set()

    def unique_key(path: Path) -> str:
        # photo.jpg and photo.png share a key; a second sample with a key would be dropped.
        key = base = sample_key(path.relative_to(root))
        number = 1
        while key in used:
            key, number = f"{base}_dup{number}", number + 1
        if key != base:
            summary.renamed.append((str(path), key))
            log.warning("duplicate key %s for %s: stored as %s", base, path, key)
        used.add(key)
        return key

    def samples() -> Iterator[dict[str, Any]]:
        for path, label in tqdm(files, desc="writing shards", unit="img", disable=not progress):
            try:
                array = resize_shorter_side(decode_rgb(path), size)
            except CorruptImageError as error:
                summary.skipped.append((str(path), str(error)))
                log.warning("skipping %s: %s", path, error)
                continue
            encoded = encode_image(array, image_format, quality)
            sample: dict[str, Any] = {
                "__key__": unique_key(path),
                image_format: encoded,
            }
            if features == "sift":
                sample["sift.npz"] = sift_npz(decode_rgb(encoded))
            if label is not None:
                sample["cls"] = str(label).encode()
            summary.written += 1
            yield sample

    summary.shards = write_samples(samples(), output, prefix, samples_per_shard)
    Path(output, "classes.json").write_text(json.dumps(classes))
    return summary


def sift_npz(rgb: np.ndarray) -> bytes:
    """SIFT keypoints of the pixels a reader will decode, as ``.npz`` bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **pack_keypoints(*detect_sift(grey_255(rgb))))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    """``featinv-shards SRC OUT``: write an image folder into webdataset shards."""
    parser = argparse.ArgumentParser(
        prog="featinv-shards", description="Write an image folder into webdataset tar shards."
    )
    parser.add_argument("source", help="image folder (flat, or one sub-folder per class)")
    parser.add_argument("output", help="folder for the .tar shards")
    parser.add_argument("--size", type=int, default=256, help="shorter side of stored images")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--prefix", default="shard")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--format", default="jpg", choices=["jpg", "png"], help="stored format")
    parser.add_argument(
        "--features", choices=["sift"], default=None, help="also store SIFT keypoints per image"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        summary = write_shards(
            args.source,
            args.output,
            size=args.size,
            samples_per_shard=args.samples_per_shard,
            prefix=args.prefix,
            quality=args.quality,
            image_format=args.format,
            features=args.features,
        )
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"featinv-shards: error: {error}\n")
    print(summary)


# ----------------------------------------------------------------------------- reading


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

    For a representation that runs in the loader (SIFT), the features of the crop are added:
    moved from the keypoints stored in the shard (``key.sift.npz``) when the crop is a plain
    window of the stored image, computed on the crop otherwise (flipped or resized crops).
    """

    def __init__(
        self,
        transform: TrainTransform | EvalTransform,
        loader_representation: SparseSIFT | None = None,
    ) -> None:
        self.transform = transform
        self.loader_representation = loader_representation
        self.skipped = 0
        self.shard_errors = 0

    def handle_shard_error(self, error: Exception) -> bool:
        """webdataset handler: a truncated shard or a duplicate key is logged, counted, skipped."""
        self.shard_errors += 1
        log.warning(
            "skipping unreadable shard data: %r (%d shard error(s) so far in this worker)",
            error,
            self.shard_errors,
        )
        return True

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        key = sample.get("__key__", "?")
        try:
            data = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
            if data is None:
                raise CorruptImageError(f"no image field among {sorted(sample)}")
            crop, box = self.transform.crop(decode_rgb(data))
            label = int(sample["cls"]) if "cls" in sample else -1
        except (CorruptImageError, ValueError) as error:
            self.skipped += 1
            log.warning(
                "skipping corrupt sample %s in %s: %s (%d skipped so far in this worker)",
                key,
                sample.get("__url__", "?"),
                error,
                self.skipped,
            )
            return None
        out = {"image": to_tensor(crop), "label": label, "key": key}
        if self.loader_representation is not None:
            out["features"] = torch.from_numpy(self._loader_features(sample, crop, box))
        return out

    def _loader_features(self, sample: dict[str, Any], crop: np.ndarray, box: Box) -> np.ndarray:
        phi = self.loader_representation
        stored = sample.get("sift.npz")
        if stored is not None and box.scale == 1.0 and not box.flipped:
            try:
                with np.load(io.BytesIO(stored)) as keypoints:
                    frames = keypoints["frames"].copy()
                    descriptors = keypoints["descriptors"]
            except (OSError, ValueError, KeyError) as error:
                log.warning(
                    "unreadable stored SIFT of %s (%s): recomputed", sample["__key__"], error
                )
            else:
                frames[:, 0] -= box.top
                frames[:, 1] -= box.left
                return phi.map_from_keypoints(frames, descriptors, *crop.shape[:2])
        return phi.map_of_image(crop)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack decoded samples into a batch, with this worker's running count of skips."""
        info = torch.utils.data.get_worker_info()
        batch = {
            "image": torch.stack([s["image"] for s in samples]),
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


def shard_pipeline(
    pattern: str | list[str],
    transform: TrainTransform | EvalTransform,
    batch_size: int,
    train: bool,
    shuffle_buffer: int = 1000,
    seed: int | None = None,
    loader_representation: SparseSIFT | None = None,
) -> wds.WebDataset | EvaluationPass:
    """A batched webdataset pipeline over shards.

    Training resamples shards with replacement (every rank and worker draws independently, so
    an epoch is a number of batches) and shuffles samples in a buffer. Evaluation reads each
    shard once, split across nodes and workers, in order, and keeps the last partial batch.
    """
    urls = expand_shards(pattern)
    decoder = SampleDecoder(transform, loader_representation)
    dataset = wds.WebDataset(
        urls,
        resampled=train,
        shardshuffle=False,
        nodesplitter=None if train else wds.split_by_node,
        workersplitter=None if train else wds.split_by_worker,
        handler=decoder.handle_shard_error,
        empty_check=False,
        seed=seed,
    )
    if train:
        # No fixed seed here: each worker must shuffle differently (the shard resampling
        # and the crops are seeded per worker).
        dataset = dataset.shuffle(shuffle_buffer)
    pipeline = (
        dataset.map(decoder)
        .select(lambda sample: sample is not None)
        .batched(batch_size, collation_fn=decoder.collate, partial=not train)
    )
    return pipeline if train else EvaluationPass(pipeline, decoder)


if __name__ == "__main__":
    main()
