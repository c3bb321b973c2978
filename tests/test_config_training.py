"""Every representation's config trains: built through the CLI as the README runs it (the
ImageNet config, then the representation's), a few steps on a fixed batch.

Tiny images where the representation allows (AlexNet needs its input size), random AlexNet
weights, narrow decoders; the loss must be finite and fall. Autoencoder checkpoints must come
back with their fine-tuned encoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from featinv import Inverter
from featinv.cli.train import FeatinvCLI, build_cli
from featinv.data.images import pixels_to_float
from tests.helpers import train_steps

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Each representation's config, AlexNet at a convolutional and a fully connected layer.
MODEL_RUNS = [
    ("hog.yaml", ()),
    ("lbp.yaml", ()),
    ("sift.yaml", ()),
    ("dsift.yaml", ()),
    ("alexnet.yaml", ("--model.representation_options.layer=conv2",)),
    ("alexnet.yaml", ("--model.representation_options.layer=fc7",)),
    ("vgg16.yaml", ("--model.representation_options.layer=conv2_2",)),
    ("vggm.yaml", ("--model.representation_options.layer=norm2",)),
]
NARROW = {
    "spatial": "{width: 8, max_width: 16, min_width: 8}",
    "fc": "{fc_width: 32, start_channels: 8, min_width: 4}",
}


def _cli(name: str, tmp_path: Path, *extra: str) -> FeatinvCLI:
    """The paper-scale command (ImageNet config, then the representation's), on tiny data:
    the bundled photos, small crops (AlexNet needs its input size), narrow decoders."""
    alexnet = name == "alexnet.yaml"
    fc = any("layer=fc" in e for e in extra)
    if name == "vggm.yaml":  # VGG-M's layers cover more of the image: a larger crop
        extra = ("--data.image_size=64", *extra)
    args = [
        f"--config={CONFIGS / 'imagenet.yaml'}",
        f"--config={CONFIGS / name}",
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
    if name in ("alexnet.yaml", "vgg16.yaml", "vggm.yaml"):
        args.append("--model.representation_options.weights=random")
    return build_cli([*args, *extra], run=False)


@pytest.mark.parametrize(
    ("name", "extra"), MODEL_RUNS, ids=lambda v: v if isinstance(v, str) else "-".join(v)
)
def test_config_trains_a_few_steps(name, extra, tmp_path):
    torch.manual_seed(0)
    cli = _cli(name, tmp_path, *extra)
    module, data = cli.model, cli.datamodule
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    batch["image"] = pixels_to_float(batch["image"])  # what on_after_batch_transfer does
    losses = train_steps(module, batch, 8)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert min(losses[-3:]) < losses[0], losses


@pytest.mark.slow
def test_autoencoder_checkpoint_reloads_with_its_fine_tuned_encoder(tmp_path):
    torch.manual_seed(0)
    cli = _cli(
        "alexnet.yaml",
        tmp_path,
        "--model.representation_options.layer=conv2",
        "--model.train_encoder=true",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.val_check_interval=1.0",
        "--data.batches_per_epoch=2",
        "--data.samples_per_epoch=null",
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
    cli = _cli("alexnet.yaml", tmp_path, "--model.representation_options.layer=fc7")
    module = cli.model.train()
    assert not any(p.requires_grad for p in module.representation.parameters())
    assert not module.representation.training and module.decoder.training


def test_training_step_uses_features_that_arrive_with_the_batch(tmp_path):
    cli = _cli("sift.yaml", tmp_path)
    module = cli.model
    images = torch.rand(2, 3, 32, 32)
    features = torch.rand(2, 133, 8, 8)
    _, used, reconstructions = module.reconstruct_batch({"image": images, "features": features})
    assert used is features
    assert torch.equal(reconstructions, module.decoder(features))


@pytest.fixture
def _restores_distributed_state():
    """An in-process DDP run sets MASTER_PORT & co. and a process group: undo both after."""
    names = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")
    before = {name: os.environ.get(name) for name in names}
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.mark.usefixtures("_restores_distributed_state")
def test_multi_gpu_config_trains_with_ddp_bf16_and_channels_last(tmp_path):
    """configs/trainer/multi_gpu.yaml on top of a model config, on one CPU device."""
    torch.manual_seed(0)
    cli = _cli(
        "hog.yaml",
        tmp_path,
        f"--config={CONFIGS / 'trainer' / 'multi_gpu.yaml'}",
        "--trainer.accelerator=cpu",  # the one override a GPU machine would not need
        "--trainer.devices=1",
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=1",
        "--data.samples_per_epoch=6",  # 3 batches of 2 on 1 process
        "--data.num_workers=0",
    )
    assert isinstance(cli.trainer.strategy, DDPStrategy)
    assert cli.trainer.precision == "bf16-mixed" and cli.datamodule.batches_per_rank() == 3
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 3
    assert torch.isfinite(cli.trainer.callback_metrics["val/normalized_error"])
    convs = [p for p in cli.model.decoder.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    # channels-last weights load into a plain decoder: the checkpoint describes itself
    last = next(c.last_model_path for c in cli.trainer.checkpoint_callbacks if c.last_model_path)
    inverter = Inverter.from_checkpoint(last)
    features = cli.model.features(torch.rand(2, 3, 32, 32))
    cli.model.eval()
    with torch.no_grad():
        assert torch.allclose(inverter.decode(features), cli.model(features), atol=1e-6)


def test_compiled_decoder_keeps_its_checkpoint_keys_and_outputs(tmp_path):
    cli = _cli(
        "hog.yaml",
        tmp_path,
        "--model.compile_decoder=true",
        "--model.compile_options={backend: eager}",  # the plumbing, without a C++ build
    )
    module = cli.model.eval()
    features = module.features(torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        expected = module(features)
        keys = set(module.decoder.state_dict())
        module.configure_model()
        module.configure_model()  # a second fit/validate does not compile twice
        assert module.decoder_compiled and set(module.decoder.state_dict()) == keys
        assert torch.allclose(module(features), expected, atol=1e-6)


def test_the_training_size_follows_the_layer_when_the_config_sets_none(tmp_path):
    """The embedded default sets ``data.image_size: null``: HOG and VGG-16's conv4_3 (an 8x8
    map at 64 px) train at 64 px, conv5_3 (4x4 there) at 128, recorded in the module's
    hyper-parameters; a size on the command line wins."""
    common = [
        f"--checkpoint_dir={tmp_path}",
        "--trainer.logger=false",
        "--data.num_workers=0",
    ]
    vgg = "--model.representation_options={architecture: vgg16, layer: %s, weights: random}"
    runs = [
        ([], 64),
        (["--model.representation=cnn", vgg % "conv4_3"], 64),
        (["--model.representation=cnn", vgg % "conv5_3"], 128),
        (["--model.representation=cnn", vgg % "conv5_3", "--data.image_size=32"], 32),
    ]
    for args, side in runs:
        cli = build_cli([*common, *args], run=False)
        assert cli.datamodule.hparams.image_size == side, args
        assert cli.model.hparams.image_size == side, args
        assert cli.model.decoder(cli.model.features(torch.rand(1, 3, side, side))).shape[-1] > 0
