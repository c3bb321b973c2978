"""What keeps long runs safe and their errors clear: the error classes every layer raises,
option checks, atomic writes, warnings that do not flood.

The ground floor of featinv (with ``featinv.ops``): it imports nothing of featinv's and no
Lightning, so every layer may use it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class OptionError(ValueError):
    """An option value that cannot work; the command line reports it in one line and exits."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing was saved from the bad step."""


class NotAFeatinvCheckpointError(ValueError):
    """The file is not a decoder file featinv wrote (a checkpoint or an exported file), or it
    does not fit the networks its configuration describes."""


class UntrustedCheckpointError(NotAFeatinvCheckpointError):
    """Loading the file would execute code it names; refused unless the user trusts it."""


@contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Write ``path`` all at once or not at all: a hidden temporary file, fsync, rename.

    The rename is atomic on POSIX file systems, so ``path`` is always either absent, the old
    complete file or the new complete file. On an exception the temporary file is removed;
    after SIGKILL it stays behind as ``.NAME.XXXX.partial``, a name no reader matches.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".partial", dir=path.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def require(condition: bool, option: str, expected: str, got: Any) -> None:
    """Raise ``OptionError("{option} must be {expected}, got {got}")`` unless ``condition``."""
    if not condition:
        raise OptionError(f"{option} must be {expected}, got {got!r}")


def warn_sometimes(logger: logging.Logger, count: int, message: str, *args: Any) -> None:
    """Log a warning that repeats with ``count``: at counts 1, 10, 100, 1000 and every 10000th.

    For faults that may recur millions of times in a long run (corrupt samples, empty SIFT
    maps, upscaled images): the first one is always seen, the log never floods. ``message``
    should include the running count so each line says how many there were.
    """
    if count in (1, 10, 100, 1000) or (count > 0 and count % 10000 == 0):
        logger.warning(message, *args)
