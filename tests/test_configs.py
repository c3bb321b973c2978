"""The configs parse as the README combines them, and hold only differences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from featinv.cli.train import DEFAULT_CONFIG, main
from featinv.decoders import build_decoder
from featinv.losses import LossSettings
from featinv.representations import AlexNet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REPRESENTATIONS = [
    "hog.yaml",
    "lbp.yaml",
    "sift.yaml",
    "dsift.yaml",
    "alexnet.yaml",
    "vgg16.yaml",
    "vggm.yaml",
]
LOSSES = ["losses/feature.yaml", "losses/deepsim.yaml"]


def _assert_contains(printed: object, expected: object, where: str = "") -> None:
    """Every value of ``expected`` is in ``printed`` (which also holds all the defaults)."""
    if isinstance(expected, dict) and expected:
        assert isinstance(printed, dict), where
        for key, value in expected.items():
            _assert_contains(printed[key], value, f"{where}.{key}")
    else:
        assert printed == expected, where


def _printed(capsys: pytest.CaptureFixture, *paths: Path) -> dict:
    args = [f"--config={p}" for p in paths]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_paper_scale_command_takes_every_value_of_its_configs(name, capsys):
    """imagenet.yaml, then the representation's, then multi_gpu.yaml: the last one wins."""
    paths = [CONFIGS / "imagenet.yaml", CONFIGS / name, CONFIGS / "trainer" / "multi_gpu.yaml"]
    printed = _printed(capsys, *paths)
    expected: dict = {}
    for path in paths:
        for section, values in yaml.safe_load(path.read_text()).items():
            expected.setdefault(section, {}).update(values)
    _assert_contains(printed, expected)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", ["hog.yaml", "alexnet.yaml"])
def test_a_loss_config_combines_with_any_model_config(model, loss, capsys):
    """configs/losses/*.yaml change the loss only: the model config keeps the rest."""
    printed = _printed(capsys, CONFIGS / "imagenet.yaml", CONFIGS / model, CONFIGS / loss)
    model_values = yaml.safe_load((CONFIGS / model).read_text())["model"]
    loss_values = yaml.safe_load((CONFIGS / loss).read_text())["model"]["loss"]
    _assert_contains(printed, {"model": {**model_values, "loss": loss_values}})
    LossSettings.from_options(printed["model"]["loss"])  # valid as the module reads it


def test_no_arguments_is_the_embedded_default(capsys):
    printed = _printed(capsys)
    _assert_contains(printed, yaml.safe_load(Path(DEFAULT_CONFIG).read_text()))


def test_a_representation_config_alone_trains_on_the_embedded_data(capsys):
    printed = _printed(capsys, CONFIGS / "hog.yaml")
    assert printed["data"]["train_shards"] is None  # the bundled photos
    assert printed["data"]["synthetic_fraction"] == 0.5
    assert printed["model"]["decoder_options"]["bottleneck_factor"] == 64  # the paper's


@pytest.mark.parametrize(
    ("layer", "explicit"),
    [
        ("conv1", {"width": 256, "max_width": 256, "min_width": 32}),
        ("conv5", {"width": 256, "max_width": 256, "min_width": 32}),
        (
            "fc6",
            {
                "fc_width": 4096,
                "num_fc": 3,
                "start_channels": 256,
                "start_size": 4,
                "num_upconvs": 5,
            },
        ),
    ],
)
def test_alexnet_config_builds_the_paper_decoder_of_each_layer(layer, explicit):
    """configs/alexnet.yaml leaves decoder_options empty: each layer's own architecture, the
    same network as spelling the paper's options out."""
    assert yaml.safe_load((CONFIGS / "alexnet.yaml").read_text())["model"]["decoder_options"] == {}
    phi = AlexNet(layer, load_weights=False)
    implicit = build_decoder(phi, 227).state_dict()
    spelled = build_decoder(phi, 227, **explicit).state_dict()
    assert {k: v.shape for k, v in implicit.items()} == {k: v.shape for k, v in spelled.items()}
    assert sum(v.numel() for v in implicit.values()) == sum(v.numel() for v in spelled.values()) > 0
    assert torch.is_tensor(next(iter(implicit.values())))


def test_configs_hold_only_differences():
    """One file per representation or network, one for the paper's data and schedule, one
    per trainer."""
    files = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
    assert files == sorted([*REPRESENTATIONS, *LOSSES, "imagenet.yaml", "trainer/multi_gpu.yaml"])
    lines = sum(len(p.read_text().splitlines()) for p in CONFIGS.rglob("*.yaml"))
    assert lines < 743 // 2, lines
