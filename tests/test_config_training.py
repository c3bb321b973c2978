"""Every config in configs/ trains: built through the CLI, a few steps on a fixed batch.

Tiny images where the representation allows (AlexNet needs its input size), random AlexNet
weights, narrow decoders; the loss must be finite and fall. Autoencoder checkpoints must come
back with their fine-tuned encoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from featinv import Inverter
from featinv.cli import FeatinvCLI
from featinv.data.datamodule import InversionDataModule
from featinv.training import InversionModule
from tests.training_helpers import train_steps

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODEL_CONFIGS = sorted(
    p for p in CONFIGS.rglob("*.yaml") if "model" in yaml.safe_load(p.read_text())
)
NARROW = {
    "spatial": "{width: 8, max_width: 16, min_width: 8}",
    "fc": "{fc_width: 32, start_channels: 8, min_width: 4}",
}


def _cli(path: Path, tmp_path: Path, *extra: str) -> FeatinvCLI:
    config = yaml.safe_load(path.read_text())["model"]
    options = config.get("representation_options") or {}
    alexnet = config["representation"] == "alexnet"
    fc = options.get("layer", "").startswith("fc")
    args = [
        "--config",
        str(path),
        "--data.train_shards=null",
        "--data.val_shards=null",
        "--data.num_workers=0",
        "--data.batch_size=2",
        f"--data.image_size={227 if alexnet else 32}",
        f"--model.decoder_options={NARROW['fc' if fc else 'spatial']}",
        f"--checkpoint_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    ]
    if alexnet:
        args.append("--model.representation_options.weights=random")
    return FeatinvCLI(InversionModule, InversionDataModule, run=False, args=[*args, *extra])


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_trains_a_few_steps(path, tmp_path):
    torch.manual_seed(0)
    cli = _cli(path, tmp_path)
    module, data = cli.model, cli.datamodule
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    losses = train_steps(module, batch, 8)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert min(losses[-3:]) < losses[0], losses


def test_autoencoder_checkpoint_reloads_with_its_fine_tuned_encoder(tmp_path):
    torch.manual_seed(0)
    cli = _cli(
        CONFIGS / "alexnet" / "autoencoder-conv2.yaml",
        tmp_path,
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.val_check_interval=1.0",
        "--data.batches_per_epoch=2",
    )
    initial = cli.model.representation.net.conv1.weight.detach().clone()
    cli.trainer.fit(cli.model, cli.datamodule)
    tuned = cli.model.representation.net.conv1.weight.detach()
    assert not torch.equal(initial, tuned)  # the encoder was trained
    last = next(c.last_model_path for c in cli.trainer.checkpoint_callbacks if c.last_model_path)
    inverter = Inverter.from_checkpoint(last)
    assert torch.equal(inverter.representation.net.conv1.weight, tuned)
    images = torch.rand(1, 3, 227, 227)
    cli.model.eval()
    with torch.no_grad():
        expected = cli.model(cli.model.features(images))
    assert torch.equal(inverter.reconstruct(images), expected)


def test_frozen_alexnet_is_not_trained_and_stays_in_eval_mode(tmp_path):
    cli = _cli(CONFIGS / "alexnet" / "fc7.yaml", tmp_path)
    module = cli.model.train()
    assert not any(p.requires_grad for p in module.representation.parameters())
    assert not module.representation.training and module.decoder.training


def test_training_step_uses_features_that_arrive_with_the_batch(tmp_path):
    cli = _cli(CONFIGS / "sift.yaml", tmp_path)
    module = cli.model
    images = torch.rand(2, 3, 32, 32)
    features = torch.rand(2, 133, 8, 8)
    _, reconstructions = module._reconstruct({"image": images, "features": features})
    assert torch.equal(reconstructions, module.decoder(features))
