"""featinv's checkpoint format: writing, reading, refusing, and files from earlier versions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from featinv import Inverter, load_checkpoint, save_checkpoint
from featinv.checkpoint import CHECKPOINT_FORMAT, NotAFeatinvCheckpointError, check_resumable
from featinv.cli import main
from featinv.decoders import build_decoder
from featinv.training import InversionModule
from tests.helpers import train_steps

FIXTURES = Path(__file__).parent / "fixtures"
#: written by featinv 0.1.0 before the checkpoint code moved into featinv.checkpoint
#: (`python train.py --data.image_size 32` with a tiny decoder, 3 steps)
OLD = FIXTURES / "hog-v0.1.0.ckpt"
OLD_DECODER = "{width: 8, max_width: 8, min_width: 8, min_bottleneck: 4}"
#: the same decoder in full: small crops now get a 3x3 convolution per level by default, so a
#: run resumed from that file names the setting it was trained with
OLD_DECODER_IN_FULL = OLD_DECODER[:-1] + ", convs_per_level: 0}"


def test_save_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    module = InversionModule(image_size=32, decoder_options={"width": 8, "max_width": 8})
    train_steps(module, {"image": torch.rand(2, 3, 32, 32)}, 2)
    module._accumulate_train_images(torch.rand(4, 3, 32, 32))
    path = save_checkpoint(tmp_path / "m.ckpt", module)
    checkpoint = load_checkpoint(path)
    assert checkpoint["featinv"]["format"] == CHECKPOINT_FORMAT
    assert checkpoint["featinv"]["train_image_count"] == 4
    images = torch.rand(3, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        expected = module(module.features(images))
    inverter = Inverter.from_checkpoint(path)
    assert torch.equal(inverter.reconstruct(images), expected)
    # an Inverter saves to the same format
    again = Inverter.from_checkpoint(save_checkpoint(tmp_path / "again.ckpt", inverter))
    assert torch.equal(again.reconstruct(images), expected)


def test_checkpoint_of_featinv_0_1_0_gives_the_same_reconstructions():
    expected = torch.load(FIXTURES / "hog-v0.1.0-outputs.pt", weights_only=True)
    inverter = Inverter.from_checkpoint(OLD)
    assert torch.allclose(
        inverter.reconstruct(expected["images"]), expected["reconstructions"], atol=1e-6
    )


def test_alexnet_checkpoint_of_featinv_0_1_0_gives_the_same_reconstructions():
    """AlexNet now runs on the generic CNN code; its earlier checkpoints load unchanged
    (written by featinv 0.1.0: CaffeNet conv1, random weights, a tiny decoder)."""
    expected = torch.load(FIXTURES / "alexnet-caffenet-conv1-v0.1.0-outputs.pt", weights_only=True)
    images = torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    inverter = Inverter.from_checkpoint(FIXTURES / "alexnet-caffenet-conv1-v0.1.0.ckpt")
    assert torch.allclose(inverter.reconstruct(images), expected["reconstructions"], atol=1e-6)


def test_run_of_featinv_0_1_0_resumes(tmp_path, monkeypatch):
    """``--ckpt_path`` on a checkpoint the earlier version wrote continues that run."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            f"--ckpt_path={OLD}",
            "--data.image_size=32",
            f"--model.decoder_options={OLD_DECODER_IN_FULL}",
            "--data.batches_per_epoch=3",
            "--trainer.max_epochs=2",
            "--trainer.limit_val_batches=1",
            "--data.num_workers=0",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
    )
    resumed = torch.load(tmp_path / "checkpoints" / "hog" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 6  # the 3 steps of the old run, then 3 more


def test_resume_refuses_other_networks_by_name():
    checkpoint = load_checkpoint(OLD)
    hparams = {**checkpoint["hyper_parameters"], "image_size": 64}
    with pytest.raises(ValueError, match="trained with image_size=32, the run is configured"):
        check_resumable(checkpoint, hparams)
    check_resumable(checkpoint, checkpoint["hyper_parameters"])
    # loss weights may change on resuming; a discriminator cannot appear or vanish
    mse = checkpoint["hyper_parameters"]
    check_resumable(checkpoint, {**mse, "loss": {"feature": 0.3}})
    with pytest.raises(ValueError, match="trained without the adversarial loss and the run"):
        check_resumable(checkpoint, {**mse, "loss": {"adversarial": 0.01}})


def test_other_files_are_refused_with_what_they_are(tmp_path):
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(NotAFeatinvCheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pth")
    with pytest.raises(NotAFeatinvCheckpointError, match="no 'featinv' entry"):
        load_checkpoint(tmp_path / "plain.pth")
    torch.save({"featinv": {"format": 99}}, tmp_path / "future.ckpt")
    with pytest.raises(NotAFeatinvCheckpointError, match="format 99, this featinv reads 1"):
        load_checkpoint(tmp_path / "future.ckpt")
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_a_network_decoder_saved_by_featinv_0_2_loads_with_that_versions_defaults(tmp_path):
    # featinv 0.2 recorded only the decoder options the user set, and sized a network's
    # decoder without contraction; the decoder's defaults have changed since
    torch.manual_seed(0)
    options = {"architecture": "tests.helpers:tiny_net", "layer": "1"}
    module = InversionModule(representation="cnn", representation_options=options, image_size=32)
    legacy = module.representation.legacy_decoder_defaults(32)
    old = build_decoder(module.representation, 32, **legacy, prior_blend=False)
    assert old.state_dict().keys() != module.decoder.state_dict().keys()
    module.decoder = old
    module.hparams["decoder_options"] = {}
    train_steps(module, {"image": torch.rand(2, 3, 32, 32)}, 2)
    path = save_checkpoint(tmp_path / "v0.2.ckpt", module)
    images = torch.rand(2, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        expected = module(module.features(images))
    inverter = Inverter.from_checkpoint(path, architecture="tests.helpers:tiny_net")
    assert torch.equal(inverter.reconstruct(images), expected)
    # and it is written back with every option, so it no longer depends on any defaults
    again = load_checkpoint(save_checkpoint(tmp_path / "again.ckpt", inverter))
    assert again["hyper_parameters"]["decoder_options"]["num_convs"] == 3
