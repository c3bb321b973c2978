"""Faults around training and checkpoints: clear errors, nothing corrupt saved, nothing lost."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from featinv import Inverter, NotAFeatinvCheckpointError
from featinv.cli.evaluate import main as evaluate
from featinv.cli.train import build_cli, main
from featinv.data.datamodule import InversionDataModule
from featinv.reliability import NonFiniteLossError
from featinv.representations import AlexNet
from featinv.training import InversionModule
from featinv.training.callbacks import AtomicCheckpointIO
from tests.helpers import add_member, trained_checkpoint

TINY = {"width": 8, "max_width": 8, "min_width": 8}


def _module(**options) -> InversionModule:
    torch.manual_seed(0)
    return InversionModule(image_size=32, decoder_options=TINY, **options)


def test_nan_in_the_loss_stops_with_the_step_and_the_fix(photo_batch):
    module = _module()
    images = torch.nn.functional.interpolate(photo_batch, size=32)
    images[0, 0, 5, 5] = float("nan")
    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at global step 0.*--model.lr.*nonfinite_loss skip"
    ):
        module.training_step({"image": images, "key": ["a"]}, 0)


def test_nan_batches_can_be_skipped_and_are_counted(tmp_path, monkeypatch):
    """With nonfinite_loss skip, a run through a Trainer drops the NaN batches (no optimizer
    step, nothing learned from them), counts them and goes on."""
    monkeypatch.chdir(tmp_path)
    original = InversionModule.training_step

    def poisoned(self, batch, batch_idx):
        if batch_idx in (1, 3):
            batch = {**batch, "image": batch["image"] * float("nan")}
        return original(self, batch, batch_idx)

    monkeypatch.setattr(InversionModule, "training_step", poisoned)
    cli = build_cli(
        [
            "--model.nonfinite_loss=skip",
            "--trainer.max_epochs=1",
            "--data.batches_per_epoch=5",
            "--trainer.limit_val_batches=0",
            "--data.num_workers=0",
            "--data.image_size=32",
            f"--model.decoder_options={TINY}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.model.skipped_nonfinite == 2
    assert cli.trainer.callback_metrics["train/skipped_nonfinite"] == 2
    # a NaN gradient would have reached every weight
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


def test_nan_during_a_real_run_saves_nothing_corrupt(tmp_path, monkeypatch):
    """The run stops at the NaN step; the checkpoint written before it stays finite."""
    monkeypatch.chdir(tmp_path)
    original = InversionModule.training_step

    def poisoned(self, batch, batch_idx):
        if self.global_step == 4:
            batch = {**batch, "image": batch["image"] * float("nan")}
        return original(self, batch, batch_idx)

    monkeypatch.setattr(InversionModule, "training_step", poisoned)
    with pytest.raises(SystemExit, match="global step 4"):
        main(
            [
                "--trainer.max_steps=10",
                "--data.batches_per_epoch=100",
                "--data.num_workers=0",
                "--data.image_size=32",
                f"--model.decoder_options={TINY}",
                "--trainer.logger=false",
                "--resume_checkpoint.every_n_train_steps=2",
                "--trainer.enable_progress_bar=false",
            ]
        )
    checkpoint = torch.load(tmp_path / "checkpoints" / "hog" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "featinv": {"format": 1}}, path)

    def crash(obj, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_resuming_from_a_checkpoint_of_another_representation_says_so(tmp_path):
    def trainer() -> L.Trainer:
        return L.Trainer(
            max_steps=1,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            default_root_dir=tmp_path,
            limit_val_batches=0,
        )

    data = InversionDataModule(image_size=32, batch_size=2, num_workers=0, batches_per_epoch=1)
    lbp_run = trainer()
    lbp_run.fit(_module(representation="lbp"), data)
    lbp_run.save_checkpoint(tmp_path / "lbp.ckpt")
    expected = r"trained with representation='lbp'.*configured with representation='hog'"
    with pytest.raises(ValueError, match=expected):
        trainer().fit(_module(), data, ckpt_path=str(tmp_path / "lbp.ckpt"))


def test_inverter_and_evaluate_refuse_foreign_checkpoints(tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, foreign)
    with pytest.raises(
        NotAFeatinvCheckpointError, match=r"resnet\.pth is not a featinv checkpoint"
    ):
        Inverter.from_checkpoint(foreign)
    with pytest.raises(SystemExit, match="not a featinv checkpoint"):
        evaluate(["--checkpoint", str(foreign), "--out", str(tmp_path / "e")])


def test_features_of_another_representation_or_dtype_are_refused(tmp_path):
    inverter = Inverter.from_checkpoint(
        trained_checkpoint(tmp_path / "hog.ckpt", image_size=32, decoder_options=TINY)
    )
    lbp_features = torch.rand(2, 58, 2, 2)
    with pytest.raises(
        ValueError, match=r"expected features of shape \(batch, 31, 4, 4\), got \(2, 58, 2, 2\)"
    ):
        inverter.decode(lbp_features)
    with pytest.raises(ValueError, match="floating-point"):
        inverter.decode(torch.zeros(2, 31, 4, 4, dtype=torch.int64))


def test_missing_alexnet_weights_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "weights" / "caffenet.pth"
    with pytest.raises(
        FileNotFoundError, match=rf"(?s){missing}.*--model\.representation_options\.weights"
    ):
        AlexNet("fc7", weights=str(missing))


def test_corrupt_validation_samples_show_in_the_validation_metrics(tmp_path, clean_shard):
    add_member(clean_shard, "bad.jpg", b"garbage")
    data = InversionDataModule(
        train_shards=str(clean_shard),
        val_shards=str(clean_shard),
        image_size=32,
        batch_size=2,
        num_workers=0,
        batches_per_epoch=2,
    )
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_module(), data)
    assert float(trainer.callback_metrics["val/skipped_samples"]) == 1
    assert Path(clean_shard).exists()
