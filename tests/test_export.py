"""Sharing decoders: safe loading, .safetensors export, and what each refusal says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from featinv import Inverter, UntrustedCheckpointError, load_checkpoint
from featinv.checkpoint import NotAFeatinvCheckpointError
from featinv.cli.evaluate import main as evaluate
from featinv.cli.export import main
from featinv.exported import export_decoder, read_exported
from tests.helpers import malicious_checkpoint, trained_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
TINY = {"width": 8, "max_width": 8, "min_width": 4}
CASES = {
    "hog": dict(representation="hog", image_size=32),
    "lbp": dict(representation="lbp", image_size=32),
    "sift": dict(representation="sift", image_size=32),
    "alexnet-conv2": dict(
        representation="alexnet",
        image_size=227,
        representation_options={"layer": "conv2", "weights": "random"},
    ),
    "alexnet-fc7": dict(
        representation="alexnet",
        image_size=227,
        representation_options={"layer": "fc7", "weights": "random"},
        decoder_options={"fc_width": 32, "start_channels": 8, "min_width": 4},
    ),
}


def test_a_pickle_that_runs_code_is_refused_everywhere_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "created-by-unpickling"
    path = malicious_checkpoint(tmp_path / "decoder.ckpt", marker)
    with pytest.raises(UntrustedCheckpointError, match=r"would execute `.*open`.*--trust-check"):
        Inverter.from_checkpoint(path)
    with pytest.raises(UntrustedCheckpointError):
        Inverter.load(path)
    with pytest.raises(SystemExit, match="refused"):
        evaluate(["--checkpoint", str(path), "--out", str(tmp_path / "e")])
    from featinv.cli.invert import main as invert

    torch.save(torch.rand(1, 31, 4, 4), tmp_path / "features.pt")
    with pytest.raises(SystemExit, match="refused"):
        invert(
            [
                "--model",
                str(path),
                "--features",
                str(tmp_path / "features.pt"),
                "--out",
                str(tmp_path / "i"),
            ]
        )
    with pytest.raises(SystemExit, match="refused"):
        main([str(path), str(tmp_path / "x")])
    assert not marker.exists()
    assert not (tmp_path / "i" / "summary.json").exists()


@pytest.mark.parametrize("name", list(CASES))
def test_export_round_trip_gives_the_checkpoints_outputs(name, tmp_path):
    options = {"decoder_options": TINY, **CASES[name]}
    checkpoint = trained_checkpoint(tmp_path / f"{name}.ckpt", steps=1, **options)
    exported = export_decoder(checkpoint, tmp_path / name, include_representation=True)
    assert exported.name == f"{name}.safetensors"
    config, tensors = read_exported(exported)
    assert config["representation"] == options["representation"]
    assert not any("optimizer" in key for key in tensors)
    size = options["image_size"]
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = Inverter.load(checkpoint).reconstruct(images)
    assert torch.equal(Inverter.load(exported).reconstruct(images), expected)


def test_third_party_weights_are_not_embedded_silently(tmp_path):
    options = {"decoder_options": TINY, **CASES["alexnet-conv2"]}
    checkpoint = trained_checkpoint(tmp_path / "alexnet.ckpt", steps=1, **options)
    exported = export_decoder(checkpoint, tmp_path / "alexnet")
    config, tensors = read_exported(exported)
    assert config["representation_weights"] == "supplied by the user"
    assert not any(key.startswith("representation.net") for key in tensors)
    with pytest.raises(NotAFeatinvCheckpointError, match="does not carry the weights"):
        Inverter.load(exported)
    # the weights file it was trained with, supplied: the same outputs as the checkpoint
    original = Inverter.load(checkpoint)
    weights = tmp_path / "caffenet.pth"
    torch.save(original.representation.net.state_dict(), weights)
    images = torch.rand(1, 3, 227, 227)
    loaded = Inverter.load(exported, representation_weights=str(weights))
    assert torch.equal(loaded.reconstruct(images), original.reconstruct(images))


def test_a_lightning_checkpoint_exports_smaller_without_optimizer_state(tmp_path):
    checkpoint = FIXTURES / "hog-v0.1.0.ckpt"  # written by the trainer: Adam state included
    assert load_checkpoint(checkpoint)["optimizer_states"]
    exported = main([str(checkpoint), str(tmp_path / "hog.safetensors")])
    assert exported.stat().st_size < checkpoint.stat().st_size / 2
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(
        Inverter.load(exported).reconstruct(images), Inverter.load(checkpoint).reconstruct(images)
    )
    config, _ = read_exported(exported)
    assert config["training"]["images_seen"] > 0 and config["featinv_version"]


def test_broken_and_foreign_files_are_named(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    checkpoint = FIXTURES / "hog-v0.1.0.ckpt"
    (tmp_path / "truncated.ckpt").write_bytes(checkpoint.read_bytes()[:5000])
    for name in ("empty.safetensors", "empty.ckpt", "truncated.ckpt"):
        with pytest.raises(NotAFeatinvCheckpointError, match="not a readable"):
            Inverter.load(tmp_path / name)
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors", metadata={"tool": "x"})
    with pytest.raises(NotAFeatinvCheckpointError, match="no featinv configuration"):
        Inverter.load(tmp_path / "other.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "bad.safetensors", metadata={"featinv": "{"})
    with pytest.raises(NotAFeatinvCheckpointError, match="not JSON"):
        Inverter.load(tmp_path / "bad.safetensors")
    metadata = {"featinv": json.dumps({"format": 1, "representation": "hog"})}
    save_file({"w": torch.zeros(2)}, tmp_path / "partial.safetensors", metadata=metadata)
    with pytest.raises(NotAFeatinvCheckpointError, match="lacks representation_options"):
        Inverter.load(tmp_path / "partial.safetensors")


def test_console_scripts_exit_zero_on_success(tmp_path):
    """A console script's return value becomes the exit status: the entry points return None."""
    import subprocess
    import sys

    code = (
        "import sys; from featinv.cli.export import console_main; "
        f"sys.argv = ['featinv-export', {str(FIXTURES / 'hog-v0.1.0.ckpt')!r}, "
        f"{str(tmp_path / 'hog')!r}]; sys.exit(console_main())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "hog.safetensors").exists()
