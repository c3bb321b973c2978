"""Library warnings a featinv user cannot act on, filtered by their exact text.

Each filter names the library, what the warning says and why it does not apply; anything
else still reaches the user.
"""

from __future__ import annotations

import logging
import re
import warnings

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
