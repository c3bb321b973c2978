"""SIGTERM ends a training run, always, after a checkpoint where one can be written.

Lightning's own SIGTERM handler sets a flag that the loops check between batches; it then
raises ``SIGTERMException`` at the next batch boundary, where the state is consistent, and
``TerminationCheckpoint`` writes ``last.ckpt`` there. A run that never reaches the next
batch (waiting on a loader that will not deliver, a hung file system) would ignore the
signal: after ``grace_seconds`` the run is ended where it stands, with ``TerminatedError``,
and without a checkpoint (mid-step state is not one to resume from).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class TerminatedError(RuntimeError):
    """SIGTERM arrived and the run could not reach a batch boundary within the grace time."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise TerminatedError(
        "stopped by SIGTERM: the run did not reach the end of a batch within the grace time, "
        "so no checkpoint was written; resume from the last one with --ckpt_path last"
    )


class TerminationCheckpoint(Callback):
    """On SIGTERM: ``last.ckpt`` at the next batch boundary, or the run ended after
    ``grace_seconds`` if no boundary comes."""

    def __init__(self, grace_seconds: int = 60) -> None:
        self.grace_seconds = grace_seconds
        self.written: Path | None = None
        self._previous: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(signal, "SIGALRM") or signal.getsignal(signal.SIGTERM) is None:
            return
        previous = signal.getsignal(signal.SIGTERM)  # Lightning's, registered before fit
        owner = os.getpid()

        def on_sigterm(signum: int, frame: Any) -> None:
            if os.getpid() != owner:  # a loader worker forked before its start ignores SIGTERM
                return
            if callable(previous):
                previous(signum, frame)
            signal.signal(signal.SIGALRM, _raise_terminated)
            signal.alarm(self.grace_seconds)

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread: Lightning's handler alone
            return
        self._previous = previous

    def _restore(self) -> None:
        """Put back the handler this callback wrapped, and cancel a pending grace alarm."""
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
        if self._previous is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
        if not isinstance(exception, SIGTERMException):
            return
        folder = next(
            (
                c.dirpath
                for c in trainer.checkpoint_callbacks
                if isinstance(c, ModelCheckpoint) and c.save_last and c.dirpath
            ),
            None,
        )
        if folder is None:
            return
        path = Path(folder) / "last.ckpt"
        trainer.save_checkpoint(path)
        self.written = path
        log.warning("SIGTERM: wrote %s at step %d", path, trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
