"""Train and validate with 2 DDP processes on CPU (gloo); each rank saves what it saw.

Run by ``tests/test_ddp_streaming.py`` as a script, because Lightning's DDP launcher starts
the other rank by running the same command again. ``python tests/ddp_script.py OUT SHARDS``
writes ``OUT/rank{0,1}.pt``: the decoder weights after training, the keys of the samples the
rank validated on in the last validation epoch, and the logged (reduced) validation metrics.
``python tests/ddp_script.py OUT SHARDS deepsim`` trains with the feature and adversarial
losses on (``DEEPSIM_LOSS``) and saves the discriminator's weights too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.nn import Module

from featinv.data.datamodule import InversionDataModule
from featinv.training import InversionModule

SETTINGS: dict[str, Any] = {
    "model": {
        "representation": "hog",
        "image_size": 32,
        "decoder_options": {"width": 8, "max_width": 16, "min_width": 8, "min_bottleneck": 4},
        "max_normalizer_images": 4,  # of 12 validation images: a subset chosen by key hash
    },
    "data": {
        "image_size": 32,
        "batch_size": 4,
        "val_batch_size": 3,
        "num_workers": 1,
        "synthetic_fraction": 0.5,  # procedural images in the training stream
    },
}


#: The loss of the adversarial variant (the discriminator never pauses, so it steps every batch).
DEEPSIM_LOSS: dict[str, Any] = {
    "image": 1.0,
    "feature": 0.1,
    "adversarial": 0.01,
    "discriminator": {"width": 8, "pause_ratio": 0.0},
}


class Probe(Callback):
    """Record the validation keys this rank sees and, at the end, its weights and metrics."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.keys: list[str] = []
        self.procedural: dict[str, torch.Tensor] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        for key, image in zip(batch["key"], batch["image"], strict=True):
            if key.startswith("procedural"):
                self.procedural[key] = image.clone()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.keys = []

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx=0
    ) -> None:
        self.keys += list(batch["key"])

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        torch.save(
            {
                "keys": self.keys,
                "procedural": self.procedural,
                "decoder": {k: v.clone() for k, v in pl_module.decoder.state_dict().items()},
                "discriminator": {
                    k: v.clone()
                    for k, v in (pl_module.discriminator or Module()).state_dict().items()
                },
                "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
                "world_size": trainer.world_size,
                "global_step": trainer.global_step,
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def build(
    shards: Path, loss: dict[str, Any] | None = None
) -> tuple[InversionModule, InversionDataModule]:
    """The module and data of this test, seeded (both ranks start from the same weights)."""
    L.seed_everything(0, workers=True)
    module = InversionModule(**SETTINGS["model"], loss=loss)
    data = InversionDataModule(
        train_shards=str(shards / "train" / "shard-*.tar"),
        val_shards=str(shards / "val" / "shard-*.tar"),
        batches_per_epoch=2,
        seed=0,
        **SETTINGS["data"],
    )
    return module, data


def main() -> None:
    out, shards = Path(sys.argv[1]), Path(sys.argv[2])
    deepsim = sys.argv[3:] == ["deepsim"]
    module, data = build(shards, DEEPSIM_LOSS if deepsim else None)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Probe(out)],
    )
    trainer.fit(module, data)


if __name__ == "__main__":
    main()
