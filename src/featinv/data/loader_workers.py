"""The loader workers' life: how they start, what SIGTERM does to them, how they end.

A scheduler ends a job by sending SIGTERM to its whole process group. The main process ends
the run at a batch boundary and writes ``last.ckpt``; the loader workers must outlive that
moment, so they ignore SIGTERM. PyTorch's worker loop first installs its own SIGTERM handler,
which kills the worker when the signal comes from anyone but its parent, and only then runs
``worker_init_fn``: a signal in between killed the worker, and the main process then stopped
with "DataLoader worker exited unexpectedly" instead of writing its checkpoint. Workers are
therefore forked with SIGTERM blocked (``loader_context``), and unblocked only once ignored
(``init_loader_worker``): a SIGTERM that arrived in between is dropped.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.context
import os
import signal
import threading

_SIGTERM = {signal.SIGTERM}


if hasattr(multiprocessing.context, "ForkProcess"):  # not where processes cannot fork

    class _SigtermBlockedForkProcess(multiprocessing.context.ForkProcess):
        """A forked process whose child starts with SIGTERM blocked (the parent's mask is
        restored as soon as the fork is done; a SIGTERM it got meanwhile is delivered then)."""

        def start(self) -> None:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGTERM)
            try:
                super().start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    class _SigtermBlockedForkContext(multiprocessing.context.ForkContext):
        Process = _SigtermBlockedForkProcess


def loader_context(num_workers: int) -> multiprocessing.context.BaseContext | None:
    """The ``multiprocessing_context`` for a loader with ``num_workers`` workers: fork with
    SIGTERM blocked where workers are forked; ``None`` (PyTorch's default) otherwise, and
    without workers (PyTorch refuses a context there)."""
    # the start method PyTorch would use: the one set, else the platform's default (the first
    # listed); asked without fixing it, so that a later set_start_method still works
    method = multiprocessing.get_start_method(allow_none=True)
    method = method or multiprocessing.get_all_start_methods()[0]
    if num_workers == 0 or method != "fork" or not hasattr(signal, "pthread_sigmask"):
        return None
    return _SigtermBlockedForkContext()


def init_loader_worker(worker_id: int, yield_cpu: bool = False) -> None:
    """A loader worker's start (``worker_init_fn``).

    The worker ignores SIGTERM, then unblocks it (see the module's docstring); the main
    process's exit ends it (``_end_loader_workers``). With ``yield_cpu`` (training on the CPU)
    it runs at the lowest priority: the step's torch threads and the workers share the same
    cores, and a worker that takes a core from the step's threads stalls the whole step, while
    a step that waits for a batch frees the cores for the workers (docs/benchmarks.md).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGTERM)
    if yield_cpu and hasattr(os, "nice"):
        os.nice(19)


def _end_loader_workers() -> None:
    """At the interpreter's exit, kill the daemonic children left (persistent loader workers):
    they ignore the SIGTERM multiprocessing's own exit handler would send, and it would then
    wait for them for ever. Registered after multiprocessing's handler, so it runs first.

    A loader iterator still alive at exit (a script that took a few batches and returned)
    keeps PyTorch's SIGCHLD handler armed: it raises as soon as the first worker dies, which
    would end this loop there and leave the other workers to the handler that waits for ever.
    The default SIGCHLD disposition is restored first; the process is ending anyway.
    """
    # First, before any other line: a SIGCHLD already pending would otherwise run PyTorch's
    # handler at the next line and raise out of this function.
    if hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children = [child for child in multiprocessing.active_children() if child.daemon]
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=10)


atexit.register(_end_loader_workers)
