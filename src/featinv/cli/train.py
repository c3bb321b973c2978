"""``python train.py`` / ``featinv-train``: LightningCLI over the inversion module and data.

With no arguments it runs the embedded default (``featinv/configs/default.yaml``): the HOG
decoder on the bundled photos, sized for a 2-core CPU. Paper-scale settings live in the
repository's ``configs/`` and are combined with repeated ``--config``.
"""

from __future__ import annotations

import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from featinv.cli.common import quiet_library_warnings, reported
from featinv.data.datamodule import InversionDataModule
from featinv.reliability import CheckpointWriteError, NonFiniteLossError, OptionError
from featinv.runtime import keep_freed_memory
from featinv.training import InversionModule
from featinv.training.budget import TimeBudget
from featinv.training.callbacks import AtomicCheckpointIO, ReconstructionGrid, RunSummary
from featinv.training.divergence import DivergenceGuard
from featinv.training.prior_blend import PriorBlendCalibration
from featinv.training.termination import TerminatedError, TerminationCheckpoint

PROG = "featinv-train"
SUBCOMMANDS = ("fit", "validate", "test", "predict")

#: The embedded default's settings: every subcommand starts from them.
DEFAULT_CONFIG = str(resources.files("featinv") / "configs" / "default.yaml")


class FeatinvCLI(LightningCLI):
    """LightningCLI with the image size shared by model and data and a closing summary."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.image_size", "model.image_size")
        # SIFT runs in the loader workers: the data module must know the representation.
        parser.link_arguments("model.representation", "data.representation")
        parser.link_arguments("model.representation_options", "data.representation_options")
        # Always-present callbacks, configurable as --checkpoint.*, --resume_checkpoint.* and
        # --grid.*: best.ckpt follows the validation error; last.ckpt is written for resuming
        # (every epoch, or every N steps), whether or not a validation has run yet.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "resume_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.filename": "best",
                "checkpoint.monitor": "val/normalized_error",
                "checkpoint.mode": "min",
                "checkpoint.save_last": False,
                # at every validation, those within an epoch too (featinv.training.budget)
                "checkpoint.save_on_train_epoch_end": False,
                "resume_checkpoint.save_top_k": 0,
                "resume_checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(ReconstructionGrid, "grid")
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(TimeBudget, "budget")
        parser.add_lightning_class_args(DivergenceGuard, "divergence")
        parser.add_argument(
            "--checkpoint_dir",
            default="checkpoints",
            help="checkpoints go to CHECKPOINT_DIR/<representation>/ (best.ckpt, last.ckpt)",
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would copy the checkpoint's hyper-parameters over the command line, so
        # `--model.representation hog --ckpt_path LBP/last.ckpt` would silently train LBP.
        # The run keeps what the user typed; the module refuses a checkpoint of other networks
        # by name and applies changed optimizer settings, saying so.
        return

    def before_fit(self) -> None:
        with reported(PROG):
            self.datamodule.check_sources()
        folder = (
            f"{self.config[self.subcommand].checkpoint_dir}/{self.model.hparams.representation}"
        )
        with reported(PROG):
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OptionError(
                    f"checkpoint_dir: cannot make the folder {folder} ({error.strerror or error})"
                ) from None
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = folder
        # A crash or a kill during a save must leave the previous checkpoint loadable.
        self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        # SIGTERM (pre-emption, a scheduler's time limit) ends the run after last.ckpt.
        if not any(isinstance(c, TerminationCheckpoint) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(TerminationCheckpoint())
        # A decoder with a blend toward the training mean image: calibrated at each validation.
        if not any(isinstance(c, PriorBlendCalibration) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(PriorBlendCalibration())

    def after_fit(self) -> None:
        checkpoint = self.trainer.checkpoint_callback
        best = None
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            # Every figure of the summary describes best.ckpt, the file users go on with (its
            # grid too): validate it once more, on every process, as DDP requires.
            self.trainer.validate(
                self.model,
                datamodule=self.datamodule,
                ckpt_path=checkpoint.best_model_path,
                verbose=False,
            )
            best = dict(self.trainer.callback_metrics)
        summary = next(c for c in self.trainer.callbacks if isinstance(c, RunSummary))
        if self.trainer.is_global_zero:
            print("\n".join(summary.lines(self.trainer, best)), flush=True)


def build_cli(args: list[str] | None = None, run: bool = True) -> FeatinvCLI:
    """The command line over ``args`` (``None``: ``sys.argv``), starting from the embedded
    default's config; ``run=False`` builds the model, data and trainer without running (and
    then takes no subcommand)."""
    quiet_library_warnings()
    return FeatinvCLI(
        InversionModule,
        InversionDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # with subcommands (run=True) each has its own parser; without, there is one
        parser_kwargs=(
            {sub: {"default_config_files": [DEFAULT_CONFIG]} for sub in SUBCOMMANDS}
            if run
            else {"default_config_files": [DEFAULT_CONFIG]}
        ),
        args=args,
        run=run,
    )


def _show_featinv_notices() -> None:
    """Print featinv's INFO notices (a default taken, a setting adjusted) as Lightning does its
    own: they say what a run chose where the config was silent."""
    logger = logging.getLogger("featinv")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``train.py`` and ``featinv-train``; ``fit`` is implied.

    Args:
        args: the command line without the program name; ``None`` reads ``sys.argv``.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] not in SUBCOMMANDS:  # `train.py --help` lists fit's options
        argv = ["fit", *argv]
    _show_featinv_notices()
    keep_freed_memory()
    if args is None:
        # LightningCLI reads sys.argv itself (and warns when given both): hand it the
        # command line with the implied subcommand there.
        sys.argv[1:] = argv
    with reported(PROG, NonFiniteLossError, TerminatedError, CheckpointWriteError):
        try:
            build_cli(None if args is None else argv)
        except SIGTERMException:
            raise SystemExit(
                f"{PROG}: stopped by SIGTERM after last.ckpt was written; resume with "
                "--ckpt_path last"
            ) from None


__all__ = ["DEFAULT_CONFIG", "FeatinvCLI", "build_cli", "main"]
