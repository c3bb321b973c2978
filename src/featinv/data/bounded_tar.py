"""webdataset shards read within the image budget, and a stream that says when it is dry.

``webdataset`` reads every tar member whole into memory before anyone looks at it: a 2 GB
member, or a gzip bomb inside a ``.tar.gz``, would be read before being rejected. Here each
member's size is read from its tar header first, and a member over the byte budget
(``featinv.data.images.max_image_bytes``) is skipped unread (tarfile's streaming mode then
steps over its data in fixed-size blocks), reported through the dataset's error handler like
any other unreadable shard data.

A training stream resamples shards forever: if none of them yields a sample (empty files,
files that are not tars, a server that refuses the connection) it would spin without end.
``ShardDrought`` counts the shards opened since the last good sample and stops the stream
with one message after ``limit`` of them.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import webdataset as wds
from webdataset import filters, tariterators

from featinv.data.images import max_image_bytes
from featinv.reliability import NoDataError

#: webdataset's own rule for metadata members it skips.
SKIP_META = re.compile(r"__[^/]*__($|/)")


class NoTrainingDataError(NoDataError):
    """No sample could be read from any shard drawn for a while: the shards are empty,
    unreadable or unreachable."""


class OversizedMemberError(ValueError):
    """A tar member over the byte budget (skipped unread)."""


def bounded_tar_iterator(
    fileobj: Any, handler: Callable[[Exception], bool]
) -> Iterator[dict[str, Any]]:
    """``{"fname", "data"}`` for each regular member of a tar stream within the byte budget."""
    budget = max_image_bytes()
    with tarfile.open(fileobj=fileobj, mode="r|*") as stream:
        for info in stream:
            try:
                if not info.isreg() or info.name is None or SKIP_META.match(info.name):
                    continue
                if info.size > budget:
                    raise OversizedMemberError(
                        f"tar member {info.name} of {info.size} bytes is over the budget of "
                        f"{budget} bytes per image (FEATINV_MAX_IMAGE_BYTES raises it): skipped"
                    )
                data = stream.extractfile(info).read()
                yield {"fname": info.name, "data": data}
                stream.members = []
            except Exception as error:
                if handler(error):
                    continue
                break


def bounded_tar_expander(
    data: Iterable[dict[str, Any]],
    handler: Callable[[Exception], bool],
    drought: ShardDrought | None = None,
) -> Iterator[dict[str, Any]]:
    """webdataset's ``tar_file_expander`` with members checked against the byte budget."""
    for source in data:
        url = source.get("url")
        try:
            for sample in bounded_tar_iterator(source["stream"], handler):
                sample["__url__"] = url
                if drought is not None:
                    drought.sample_arrived()
                yield sample
            yield {}  # the end of a shard: samples of two shards are never grouped together
        except Exception as error:
            error.args = (*error.args, url)
            if handler(error):
                continue
            break


class ShardDrought:
    """Counts shards drawn since the last tar member was read; raises
    ``NoTrainingDataError`` past ``limit`` (a pipeline stage before the shard opener; the
    expander calls ``sample_arrived``)."""

    def __init__(self, pattern: str, limit: int) -> None:
        self.pattern, self.limit = pattern, limit
        self.since_sample = 0
        self.last_error: str | None = None

    def sample_arrived(self) -> None:
        self.since_sample = 0

    def __call__(self, sources: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for source in sources:
            self.since_sample += 1
            if self.since_sample > self.limit:
                reason = f"; the last error: {self.last_error}" if self.last_error else ""
                raise NoTrainingDataError(
                    f"no training sample could be read from the last {self.limit} shards "
                    f"drawn from {self.pattern} (empty, not tar files, or unreachable){reason}"
                )
            yield source


def bounded_webdataset(
    urls: list[str], drought: ShardDrought | None = None, **options: Any
) -> wds.WebDataset:
    """``wds.WebDataset(urls, **options)`` whose tar members are read within the byte budget,
    with ``drought`` (if given) watching the shards it opens."""
    dataset = wds.WebDataset(urls, **options)
    handler = options.get("handler", wds.reraise_exception)
    stages = dataset.pipeline
    for index, stage in enumerate(stages):
        if getattr(stage, "f", None) is tariterators.tar_file_expander:
            expander = filters.pipelinefilter(bounded_tar_expander)
            stages[index] = expander(handler=handler, drought=drought)
            if drought is not None:  # before the opener: a shard that does not open counts too
                stages.insert(index - 1, drought)
            break
    else:  # a webdataset whose pipeline this code does not know: refuse rather than read blind
        raise RuntimeError("webdataset's pipeline has no tar_file_expander stage to bound")
    return dataset
