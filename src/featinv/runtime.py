"""How featinv's commands set up their process: settings of the C allocator.

Importing featinv changes nothing; the commands (``train.py``, ``evaluate.py``,
``featinv-invert``) and the benchmarks call ``keep_freed_memory`` first, and a script of a
user's can too.
"""

from __future__ import annotations

import ctypes

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let the C allocator keep the memory torch frees, for the next step to reuse.

    A training step, a baseline iteration or a batch of HOG frees and allocates again the
    same megabytes of intermediates. glibc by default maps every block over its (adaptive, at
    most 32 MB) threshold afresh and returns freed memory at the top of its heap to the
    system, so each step touched its buffers again page by page: about 10,000 page faults
    per step of the embedded default (``docs/benchmarks.md``). Only the allocator's reuse
    changes, not what is computed; the process keeps its peak memory instead of returning it.

    Returns:
        whether the setting took (false where the C library is not glibc).
    """
    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    except (OSError, TypeError):  # no C library of the process to open (Windows)
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(
        mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    )
