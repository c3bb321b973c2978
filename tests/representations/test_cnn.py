"""Any layer of any CNN: truncation is exact, geometry is the papers', names are checked."""

from __future__ import annotations

import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.io import savemat
from torch import nn

from featinv import Inverter, UntrustedCheckpointError
from featinv.baseline import OptimizationInverter
from featinv.cli import main
from featinv.representations import CNN, build_representation
from featinv.representations.architectures import ARCHITECTURES
from featinv.training import InversionModule

VGG16_LAYERS = ["conv1_2", "relu2_1", "pool3", "conv4_3", "conv5_3", "pool5", "fc7", "fc8"]


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory) -> tuple[nn.Module, str]:
    """A whole VGG-16 (torchvision's layout) with random weights, saved as a state dict."""
    torch.manual_seed(0)
    network = ARCHITECTURES["vgg16"].build().eval()
    path = tmp_path_factory.mktemp("weights") / "vgg16-397923af.pth"
    torch.save(network.state_dict(), path)
    return network, str(path)


def test_vgg16_layers_equal_the_whole_networks_activations_exactly(vgg16_file):
    network, path = vgg16_file
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    names = dict(network.named_modules())
    paths = ARCHITECTURES["vgg16"].layers
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        names[paths[layer]].register_forward_hook(
            lambda m, i, o, layer=layer: captured.__setitem__(layer, o.clone())
        )
        for layer in VGG16_LAYERS
    ]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        network((images - mean) / std)
    for hook in hooks:
        hook.remove()
    for layer in VGG16_LAYERS:
        phi = CNN("vgg16", layer, weights=path)
        with torch.no_grad():
            out = phi(images)
        assert torch.equal(out, captured[layer]), layer
        assert phi.output_shape(64) == tuple(captured[layer].shape[1:]), layer
    # the network is cut after the tapped layer (features.21): nothing after it is built
    kept = sum(p.numel() for p in CNN("vgg16", "conv4_3", weights=path).parameters())
    assert kept == sum(p.numel() for p in network.features[:22].parameters())


@pytest.mark.parametrize(
    ("architecture", "layer", "receptive_field", "stride"),
    [  # Mahendran & Vedaldi, IJCV 2016, Tables 1-3 ("r.f. size", "r.f. stride")
        ("caffealex", "pool1", 19, 8),
        ("caffealex", "conv2", 51, 8),
        ("caffealex", "pool5", 195, 32),
        ("caffealex", "fc6", 355, 32),
        ("vggm", "conv1", 7, 2),
        ("vggm", "pool2", 43, 16),
        ("vggm", "conv5", 139, 16),
        ("vggm", "fc6", 331, 32),
        ("vgg16", "pool1", 6, 2),
        ("vgg16", "conv3_3", 40, 4),
        ("vgg16", "conv5_2", 164, 16),
        ("vgg16", "fc6", 404, 32),
    ],
)
def test_probed_receptive_field_and_stride_are_the_papers(
    architecture, layer, receptive_field, stride
):
    phi = CNN(architecture, layer, load_weights=False)
    assert (phi.receptive_field, phi.stride) == (receptive_field, stride)


@pytest.mark.parametrize(
    ("layer", "side"),
    [("conv1_2", 64), ("conv4_3", 64), ("pool4", 128), ("conv5_3", 128), ("fc7", 64)],
)
def test_a_layer_trains_where_its_map_is_at_least_8_wide(layer, side):
    # 64 px unless the map would be narrower than 8 there; vectors (VGG-16's adaptive
    # pooling takes any size) at 64
    phi = CNN("vgg16", layer, load_weights=False)
    assert phi.training_image_size() == side
    shape = phi.output_shape(side)
    assert len(shape) == 1 or min(shape[1:]) >= 8


def test_hand_made_representations_train_at_64_px():
    for name in ("hog", "lbp", "dsift"):  # LBP's 4x4 and DSIFT's 5x5 maps are theirs by design
        assert build_representation(name).training_image_size() == 64


def test_baseline_defaults_follow_section_5_2():
    def defaults(architecture: str, layer: str) -> tuple[float, int]:
        options = CNN(architecture, layer, load_weights=False).baseline_defaults()
        return options["c"], options["jitter"]

    assert defaults("vgg16", "conv4_3") == (300.0, 1 * 2)  # stride 8: jitter 2
    assert defaults("vgg16", "conv5_1") == (100.0, 4)
    assert defaults("vgg16", "conv5_3") == (20.0, 4)
    assert defaults("vgg16", "fc7") == (1.0, 8)
    assert defaults("vggm", "relu3") == (300.0, 4)
    assert defaults("vggm", "conv4") == (100.0, 4)
    assert defaults("vggm", "relu5") == (20.0, 4)
    assert defaults("vggm", "pool5") == (1.0, 8)


def test_baseline_inverts_a_vgg16_conv_layer(vgg16_file):
    _, path = vgg16_file
    phi = CNN("vgg16", "conv2_2", weights=path)
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    result = OptimizationInverter(phi, iterations=40).invert(images, progress=False)
    assert (result.objective[-1] < result.objective[0]).all(), result.objective[[0, -1]]


@pytest.fixture
def user_network(tmp_path, monkeypatch) -> str:
    """A user's own network, importable as ``mynets:build`` (and a broken ``mynets:tuple``)."""
    (tmp_path / "mynets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Pair(nn.Module):
                def forward(self, x):
                    return x, x

            def build():
                return nn.Sequential(
                    nn.Conv2d(3, 8, 3, stride=2, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(8, 16, 3, stride=2, padding=1),
                    nn.ReLU(),
                    Pair(),
                )

            not_a_network = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mynets", None)
    return "mynets:build"


def test_a_users_network_by_import_path(user_network):
    phi = build_representation("cnn", architecture=user_network, layer="3")
    assert phi.output_shape(32) == (16, 8, 8) and phi.stride == 4
    assert phi.receptive_field == 7  # 3, then 3 more at stride 2
    assert phi.baseline_defaults() == {"jitter": 1}
    assert phi.label == "build-3"


def test_bad_architectures_and_layers_are_named(user_network, tmp_path, vgg16_file):
    with pytest.raises(ValueError, match="no layer 'conv5_4'; nearest: conv5_3, conv5_2"):
        CNN("vgg16", "conv5_4", load_weights=False)
    with pytest.raises(ValueError, match=r"no layer '7'; nearest: .*\(5 layers in all\)"):
        CNN(user_network, "7")
    with pytest.raises(ValueError, match="outputs a tuple, not a tensor"):
        CNN(user_network, "4")
    with pytest.raises(ValueError, match="does not import"):
        CNN("no_such_package.nets:build", "0")
    with pytest.raises(ValueError, match=r"returned a int, not a torch nn\.Module"):
        CNN("mynets:not_a_network", "0")
    with pytest.raises(ValueError, match=r"neither a built-in .* nor an import path"):
        CNN("resnet50", "layer4")
    alexnet = tmp_path / "alexnet.pth"
    torch.save(ARCHITECTURES["alexnet"].build().state_dict(), alexnet)
    with pytest.raises(ValueError, match=r"'features\.0\.weight' has shape \(64, 3, 11, 11\)"):
        CNN("vgg16", "conv1_1", weights=str(alexnet))
    torch.hub.set_dir(str(tmp_path / "empty-hub"))
    try:
        with pytest.raises(FileNotFoundError, match=r"empty-hub/checkpoints/vgg16-397923af\.pth"):
            CNN("vgg16", "conv1_1")
    finally:
        torch.hub.set_dir(str(tmp_path / "unused"))


def test_weights_files_as_training_scripts_save_them_load(tmp_path, vgg16_file):
    """A state dict wrapped by DataParallel (``module.``) or a LightningModule (``model.``),
    inside a training checkpoint, or as safetensors, loads the same tensors."""
    network, _ = vgg16_file
    state = network.state_dict()
    files = {
        "dataparallel.pth": {"module." + k: v for k, v in state.items()},
        "checkpoint.pth": {"model": state, "epoch": 90, "best_acc1": 71.6},
        "lightning.pth": {"state_dict": {"model." + k: v for k, v in state.items()}},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "vgg16.safetensors")
    for name in [*files, "vgg16.safetensors"]:
        phi = CNN("vgg16", "conv2_1", weights=str(tmp_path / name))
        assert torch.equal(phi.net.features[5].weight, state["features.5.weight"]), name


def test_weights_files_featinv_cannot_use_as_they_are_get_one_line(tmp_path, vgg16_file):
    network, _ = vgg16_file
    keras = tmp_path / "vgg16.weights.h5"
    with h5py.File(keras, "w") as f:
        f.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 3, 64), np.float32))
    matlab = tmp_path / "imagenet-vgg-verydeep-16.mat"
    savemat(matlab, {"layers": np.zeros(1)})
    whole = tmp_path / "whole-network.pth"
    torch.save(network, whole)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a network" * 100)
    numbered, untyped = tmp_path / "numbered.pth", tmp_path / "untyped.pth"
    torch.save({1: torch.zeros(1)}, numbered)
    torch.save({"features.0.weight": 3}, untyped)
    expected = {
        keras: r"is Keras weights, not a state dict: convert it first \(featinv-convert-weights",
        matlab: r"is a MATLAB \.mat file, not a state dict: convert it first",
        whole: r"without running code \(loading it would run `torch\.nn\.modules\.container",
        garbage: r"is not a readable weights file",
        numbered: r"is not a vgg16 state dict: key 'features\.0\.weight' is missing \(it has 1,",
        untyped: r"'features\.0\.weight' holds a value of type int, not a tensor",
    }
    for path, message in expected.items():
        with pytest.raises(ValueError, match=message):
            CNN("vgg16", "conv1_1", weights=str(path))


def test_a_users_network_trains_through_train_py_and_reloads(user_network, tmp_path, monkeypatch):
    """One line of config: --model.representation cnn with an import path and a module name."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            "--model.representation=cnn",
            f"--model.representation_options={{architecture: '{user_network}', layer: '3'}}",
            "--model.decoder_options={width: 8, max_width: 8, min_width: 8}",
            "--data.image_size=32",
            "--trainer.max_steps=3",
            "--data.batches_per_epoch=3",
            "--trainer.limit_val_batches=1",
            "--data.num_workers=0",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
    )
    last = torch.load(tmp_path / "checkpoints" / "cnn" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3
    path = tmp_path / "checkpoints" / "cnn" / "last.ckpt"
    with pytest.raises(UntrustedCheckpointError, match="Nothing was imported"):
        Inverter.from_checkpoint(path)  # the file names code: the user must name it too
    inverter = Inverter.from_checkpoint(path, architecture=user_network)
    module = InversionModule.load_from_checkpoint(tmp_path / "checkpoints" / "cnn" / "last.ckpt")
    images = torch.rand(2, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        expected = module(module.features(images))
    assert torch.equal(inverter.reconstruct(images), expected)
    assert inverter.representation.label == "build-3"
    # the validation calibrated the decoder's blend toward the training data's mean image,
    # and best.ckpt carries it: Inverter applies it
    best_path = tmp_path / "checkpoints" / "cnn" / "best.ckpt"
    best = torch.load(best_path, weights_only=False)
    weight = float(best["state_dict"]["decoder.blend.weight"])
    assert 0.0 <= weight <= 1.0
    entry = best["featinv"]
    mean = entry["train_image_sum"] / entry["train_image_count"]
    torch.testing.assert_close(best["state_dict"]["decoder.blend.prior"], mean.float())
    inverter = Inverter.from_checkpoint(best_path, architecture=user_network)
    blended = inverter.reconstruct(images)
    inverter.decoder.blend.enabled = False
    raw = inverter.reconstruct(images)
    prior = F.interpolate(mean.float()[None], size=raw.shape[-2:], mode="bilinear")
    torch.testing.assert_close(blended, prior + weight * (raw - prior))


@pytest.mark.parametrize("legacy", [False, True], ids=["saved", "file-before-it-was-saved"])
def test_a_converted_files_channel_order_comes_back_from_the_checkpoint(
    vgg16_file, tmp_path, legacy
):
    network, _ = vgg16_file
    converted = tmp_path / "caffe-vgg16.pth"  # as featinv-convert-weights writes Caffe's
    normalization = {"mean": [104.007, 116.669, 122.679], "scale": 255.0, "bgr": True}
    torch.save({"state_dict": network.state_dict(), "normalization": normalization}, converted)
    options = {"architecture": "vgg16", "layer": "conv2_2", "weights": str(converted)}
    trained = build_representation("cnn", **options).eval()
    state = trained.state_dict()
    if legacy:
        del state["input_norm.bgr"]
    # what a checkpoint or an exported file rebuilds: options, then the saved state
    rebuilt = build_representation("cnn", load_weights=False, **options).eval()
    rebuilt.load_state_dict(state)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), trained(images), rtol=0, atol=0)
        assert not torch.equal(trained(images), trained(images.flip(1)))  # the order matters
