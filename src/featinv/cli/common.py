"""What every featinv command shares: the user-error class, argument types, exit codes, and
the library warnings a user cannot act on.

Every command reports a problem with its input as one line, ``featinv-NAME: error: ...``, and
exits with ``EXIT_USAGE`` (2, argparse's own) for a malformed command line and
``EXIT_FAILURE`` (1) for input that cannot be used (a missing file, a file of the wrong kind,
an option that cannot work). No traceback reaches the user for either.
"""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import torch

from featinv.data.images import CorruptImageError
from featinv.reliability import NoDataError, NotAFeatinvCheckpointError, OptionError

#: Exit status for a command line that does not parse (argparse uses it too).
EXIT_USAGE = 2
#: Exit status for input that cannot be used.
EXIT_FAILURE = 1


class CommandError(Exception):
    """A problem with the user's input, reported as one line."""


#: What a command reports as one line: the user's input, not featinv, is at fault.
USER_ERRORS: tuple[type[BaseException], ...] = (
    CommandError,
    OptionError,
    NotAFeatinvCheckpointError,
    CorruptImageError,
    NoDataError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)


def fail(prog: str, message: object) -> NoReturn:
    """Exit with ``EXIT_FAILURE`` after printing ``PROG: error: MESSAGE`` to stderr (Python
    prints a ``SystemExit``'s text there and exits with status 1)."""
    text = str(message)
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its last line
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    raise SystemExit(f"{prog}: error: {text}")


@contextmanager
def reported(prog: str, *more: type[BaseException]) -> Iterator[None]:
    """Turn the user errors raised inside (``USER_ERRORS`` and ``more``) into one line."""
    try:
        yield
    except (*USER_ERRORS, *more) as error:
        fail(prog, error)


def add_file_trust_arguments(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint`` and ``--architecture`` for commands that open decoder files."""
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load what a file names even if that runs code (a pickle that names code, a "
        "network given by import path): only for files you trust",
    )
    parser.add_argument(
        "--architecture",
        default=None,
        help="the network (package.module:callable) of a file whose representation is a "
        "network given by import path; nothing a file names is imported without it",
    )


def torch_device(text: str) -> torch.device:
    """An argparse type: a torch device that exists here (``cuda`` needs a CUDA GPU)."""
    try:
        chosen = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU is available here; use cpu")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r}: there are {torch.cuda.device_count()} CUDA device(s)"
        )
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here; use cpu")
    return chosen


def default_device() -> str:
    """``cuda`` where a CUDA GPU is available, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (and at most ``maximum``);
    argparse names the option in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def console_script(main: Callable[[], object]) -> Callable[[], None]:
    """A console-script entry point for ``main``: its return value (a report, a path) would
    otherwise become the process's exit status."""

    def run() -> None:
        main()

    run.__doc__ = f"Console script of ``{main.__module__}.{main.__name__}``."
    return run


#: (message regex, why it does not apply to featinv runs), for Python warnings.
LIBRARY_WARNINGS: tuple[tuple[str, str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "Lightning's own pytree helper calls an API torch deprecated; nothing in featinv "
        "or in a user's config uses it",
    ),
)

#: (logger name, message regex, why), for library log records.
LIBRARY_LOG_LINES: tuple[tuple[str, str, str], ...] = (
    (
        "lightning.pytorch.utilities.rank_zero",
        r"^💡 Tip: ",
        "an advertisement for Lightning's hosted services, printed at every run",
    ),
)


class _DropMatching(logging.Filter):
    """A logging filter that drops records whose message matches a regex."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_library_warnings() -> None:
    """Install the filters of ``LIBRARY_WARNINGS`` and ``LIBRARY_LOG_LINES`` (idempotent)."""
    for message, _why in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name, message, _why in LIBRARY_LOG_LINES:
        logger = logging.getLogger(name)
        if not any(
            isinstance(f, _DropMatching) and f.pattern.pattern == message for f in logger.filters
        ):
            logger.addFilter(_DropMatching(message))
