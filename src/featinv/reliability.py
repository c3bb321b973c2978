"""What keeps long runs safe and their errors clear: the error classes every layer raises,
option checks, atomic writes, warnings that do not flood.

The ground floor of featinv (with ``featinv.ops``): it imports nothing of featinv's and no
Lightning, so every layer may use it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class OptionError(ValueError):
    """An option value that cannot work; the command line reports it in one line and exits."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing was saved from the bad step."""


class NoDataError(RuntimeError):
    """No usable sample could be read from the data a run was given."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a folder that cannot be made); the
    previous checkpoint is intact."""


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
        # mkstemp makes the file 0600; a written file gets the permissions any other new
        # file gets here (0666 less the umask), so colleagues can read shared shards
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting it, and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or ``None``."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def unpacked_size(path: Path) -> int | None:
    """The bytes a zip archive's members unpack to (a compressed member can be a bomb; torch
    saves zip archives), or ``None`` for a file that is not one (read as it is on disk)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # the reader says what is wrong with it


def memory_shortfall(needed: int) -> str | None:
    """``None`` where ``needed`` bytes fit in the memory available, else the words saying
    they do not (``would take 3.0 GiB to read, more than the 1.2 GiB of memory available``)."""
    free = available_memory()
    if free is None or needed <= free:
        return None
    return (
        f"would take {needed / 2**30:.1f} GiB to read, more than the "
        f"{free / 2**30:.1f} GiB of memory available"
    )


def check_file_fits(path: Path) -> None:
    """Refuse, before reading it, a file whose contents (unpacked, for a zip archive) would
    need more memory than is available.

    Raises:
        NotAFeatinvCheckpointError: naming the file and both sizes.
    """
    unpacked = unpacked_size(path)
    shortfall = memory_shortfall(path.stat().st_size if unpacked is None else unpacked)
    if shortfall is not None:
        raise NotAFeatinvCheckpointError(f"{path} {shortfall}")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None``: JSON has no such
    numbers, and a file with ``NaN`` in it is not JSON to most readers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as strict JSON (non-finite numbers as ``null``), atomically."""
    text = json.dumps(json_safe(value), indent=2, allow_nan=False)
    with atomic_write(path) as stream:
        stream.write(text.encode())
