"""Training: the loss falls, the schedule decays, checkpoints describe themselves."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from featinv import Inverter
from featinv.cli import main
from featinv.data.datamodule import InversionDataModule
from featinv.training import InversionModule
from featinv.training.options import linear_decay
from tests.helpers import train_steps

TINY_DECODER = {"width": 16, "max_width": 32, "min_width": 8}


def test_loss_falls_on_a_fixed_batch(photo_batch):
    torch.manual_seed(0)
    module = InversionModule(image_size=64, decoder_options=TINY_DECODER)
    losses = train_steps(module, {"image": photo_batch}, 100)
    # below the best constant images for this batch: only the features can get it there
    mean_image = photo_batch.mean(dim=0, keepdim=True)
    mean_colour = photo_batch.mean(dim=(0, 2, 3), keepdim=True)
    assert losses[-1] < F.mse_loss(mean_image.expand_as(photo_batch), photo_batch), losses[::10]
    assert losses[-1] < 0.6 * F.mse_loss(mean_colour.expand_as(photo_batch), photo_batch)


def _fit(
    tmp_path, max_steps: int = 4, **model_options
) -> tuple[L.Trainer, InversionModule, InversionDataModule]:
    torch.manual_seed(0)
    module = InversionModule(image_size=32, decoder_options=TINY_DECODER, **model_options)
    data = InversionDataModule(image_size=32, batch_size=4, num_workers=0, batches_per_epoch=2)
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(module, data)
    return trainer, module, data


def test_checkpoint_round_trip_through_inverter(tmp_path, photo_batch):
    trainer, module, _ = _fit(tmp_path)
    path = tmp_path / "round-trip.ckpt"
    trainer.save_checkpoint(path)
    images = torch.nn.functional.interpolate(photo_batch, size=32, mode="bilinear")
    module.eval()
    with torch.no_grad():
        expected = module(module.features(images))
    inverter = Inverter.from_checkpoint(path, device="cpu")
    assert torch.equal(inverter.reconstruct(images), expected)
    assert torch.equal(inverter.decode(module.features(images)), expected)
    # every option of the decoder is recorded, the ones set as they were set
    recorded = inverter.hparams["decoder_options"]
    assert {k: recorded[k] for k in TINY_DECODER} == TINY_DECODER
    assert {"min_bottleneck", "num_convs", "convs_per_level", "standardize"} <= set(recorded)


def test_learning_rate_decays_near_the_end(tmp_path):
    trainer, _, _ = _fit(
        tmp_path, max_steps=8, lr_decay_start=0.5, lr_final_factor=0.1, lr_warmup_steps=0
    )
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(1e-4, rel=1e-6)


def test_learning_rate_warms_up_linearly(tmp_path):
    trainer, _, _ = _fit(tmp_path, max_steps=3, lr_warmup_steps=10, lr_decay_start=1.0)
    # three steps taken: the rate in force for the fourth is 4/10 of lr
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(4e-4, rel=1e-6)


def test_warmup_and_decay_multiply():
    factor = linear_decay(100, 0.5, 0.1, warmup=20)
    assert factor(0) == pytest.approx(1 / 20)
    assert factor(19) == factor(50) == 1.0
    assert factor(100) == pytest.approx(0.1)
    assert linear_decay(float("inf"), 0.5, 0.1, warmup=4)(1) == pytest.approx(0.5)


def test_adam_betas_default_to_the_representations_and_are_recorded():
    hog = InversionModule(representation="hog", image_size=32, decoder_options=TINY_DECODER)
    assert tuple(hog.hparams.betas) == (0.9, 0.999)  # the paper's
    network = InversionModule(
        representation="cnn",
        representation_options={"architecture": "alexnet", "layer": "conv1", "weights": "random"},
        image_size=64,
        decoder_options=TINY_DECODER,
    )
    assert tuple(network.hparams.betas) == (0.9, 0.99)
    chosen = InversionModule(
        representation="hog", image_size=32, decoder_options=TINY_DECODER, betas=(0.5, 0.9)
    )
    assert tuple(chosen.hparams.betas) == (0.5, 0.9)


def test_learning_rate_decays_over_the_batches_of_an_adversarial_run(tmp_path):
    """max_steps counts both optimizers' steps; the schedule still ends at the last batch."""
    trainer, module, _ = _fit(
        tmp_path,
        max_steps=8,
        lr_decay_start=0.5,
        lr_final_factor=0.1,
        lr_warmup_steps=0,
        loss={"adversarial": 0.1},
    )
    assert trainer.global_step == 8 and not module.automatic_optimization
    decoder, discriminator = trainer.optimizers
    assert decoder.param_groups[0]["lr"] == pytest.approx(1e-4, rel=1e-6)
    assert discriminator.param_groups[0]["lr"] == pytest.approx(2e-4)  # DeePSiM's, constant


def test_validation_reports_the_normalized_error(tmp_path):
    trainer, _, _ = _fit(tmp_path)
    metrics = trainer.callback_metrics
    assert 0 < float(metrics["val/normalized_error"]) < 5
    assert 0.5 < float(metrics["val/mean_image_error"]) < 0.9
    # Phi(x_hat) against Phi(x), and the reconstructions' gradients against the photos'
    assert 0 < float(metrics["val/feature_error"]) < 2
    assert 0 < float(metrics["val/sharpness"]) < 2


@pytest.mark.slow
def test_command_line_default_job_writes_checkpoints_grid_and_wandb_run(
    tmp_path, monkeypatch, capsys
):
    """`python train.py` with a few steps: wandb offline, best/last checkpoints, PNG grid."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            "--trainer.max_steps=3",
            "--data.batches_per_epoch=3",
            "--data.num_workers=0",
            "--data.image_size=32",
            "--model.decoder_options={width: 8, max_width: 16, min_width: 8}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    out = capsys.readouterr().out
    # the summary describes best.ckpt against both constant baselines, with colour casts
    for line in (
        "validation normalized error (best checkpoint): ",
        "the training data's mean image (honest constant baseline): ",
        "the validation set's own mean image (oracle): ",
        "colour cast, |mean colour - photo's|, 0-1 scale: ",
        "the best constant colour for the set (oracle): ",
    ):
        assert line in out, line
    # the training data's mean image travels in checkpoints: a resumed run keeps its baseline
    saved = torch.load(tmp_path / "checkpoints" / "hog" / "last.ckpt", weights_only=False)
    assert saved["featinv"]["train_image_count"] == 3 * 32  # 3 steps of the default batch
    assert saved["featinv"]["train_image_sum"].shape == (3, 32, 32)
    assert (tmp_path / "checkpoints" / "hog" / "best.ckpt").exists()
    assert (tmp_path / "checkpoints" / "hog" / "last.ckpt").exists()
    assert (tmp_path / "checkpoints" / "hog" / "val_grid.png").exists()
    assert list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    inverter = Inverter.from_checkpoint(tmp_path / "checkpoints" / "hog" / "best.ckpt")
    assert inverter.reconstruct(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
