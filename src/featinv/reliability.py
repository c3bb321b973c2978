"""What keeps long runs safe: atomic file writes and a clear stop on a non-finite loss."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class OptionError(ValueError):
    """An option value that cannot work; the command line reports it in one line and exits."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing was saved from the bad step."""


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename it into place.

    A crash (or a full disk, or SIGKILL) during a save leaves the previous checkpoint intact
    and loadable: the rename is atomic on POSIX file systems, so ``last.ckpt`` is always
    either the old complete file or the new complete file, never a partial one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        with atomic_write(path) as stream:
            torch.save(checkpoint, stream)
