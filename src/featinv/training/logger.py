"""The default experiment logger: wandb, offline, in ``logs/``, with nothing to set up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline by default (no account; ``wandb sync`` uploads).

    Two differences keep a run's output to what a user can act on: ``save_dir`` exists
    before wandb starts (wandb looks for a git root there and warns when the folder is
    missing), and Lightning's unused ``anonymous=None`` is not passed on (wandb warns that
    the setting is deprecated whenever it is present).

    Args:
        project: wandb project name.
        save_dir: folder of the run files (``logs/wandb/...``).
        offline: log locally only.
        kwargs: the other arguments of ``lightning.pytorch.loggers.WandbLogger``.
    """

    def __init__(
        self,
        project: str = "featinv",
        save_dir: str = "logs",
        offline: bool = True,
        **kwargs: Any,
    ) -> None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, save_dir=save_dir, offline=offline, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
