"""featinv-invert end to end: photos with a corrupt one among them, and features from a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from featinv import Inverter
from featinv.cli.invert import load_features, main
from featinv.exported import export_decoder
from tests.helpers import trained_checkpoint

TINY = {"width": 8, "max_width": 8, "min_width": 8}


@pytest.fixture
def model(tmp_path):
    checkpoint = trained_checkpoint(tmp_path / "hog.ckpt", image_size=32, decoder_options=TINY)
    return export_decoder(checkpoint, tmp_path / "hog")


def test_a_folder_of_photos_with_a_corrupt_one(model, tmp_path, photo_arrays):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, array in enumerate(photo_arrays[:3]):
        Image.fromarray(array).save(folder / f"photo{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    summary = main(["--model", str(model), str(folder), "--out", str(tmp_path / "out")])
    out = tmp_path / "out"
    assert [s["file"] for s in summary["skipped"]] == [str(folder / "broken.jpg")]
    assert len(summary["images"]) == 3
    assert json.loads((out / "summary.json").read_text())["images"] == summary["images"]
    for item in summary["images"]:
        assert Image.open(out / item["reconstruction"]).size == (32, 32)
        stem = item["reconstruction"].removesuffix(".png")
        assert (out / f"{stem}_side_by_side.png").exists()
        assert item["mse"] > 0 and np.isfinite(item["psnr"]) and 0 < item["feature_error"] < 2
    assert not list(out.glob(".*partial"))  # every file was renamed into place


def test_features_from_a_file_are_checked_and_decoded(model, tmp_path):
    def decode(name: str, out: str) -> dict:
        features, folder = str(tmp_path / name), str(tmp_path / out)
        return main(["--model", str(model), "--features", features, "--out", folder])

    inverter = Inverter.load(model)
    features = inverter.features(torch.rand(3, 3, 32, 32))
    torch.save(features, tmp_path / "f.pt")
    summary = main(
        ["--model", str(model), "--features", str(tmp_path / "f.pt"), "--out", str(tmp_path / "a")]
    )
    assert summary["features"]["count"] == 3
    decoded = np.asarray(Image.open(tmp_path / "a" / "features_00000.png"), dtype=np.float32)
    expected = inverter.decode(features[:1])[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255
    assert np.abs(decoded - expected).max() <= 0.5 + 1e-3  # the PNG's rounding only
    np.save(tmp_path / "f.npy", features[0].numpy())  # one feature map, no batch dimension
    assert (
        main(
            [
                "--model",
                str(model),
                "--features",
                str(tmp_path / "f.npy"),
                "--out",
                str(tmp_path / "b"),
            ]
        )["features"]["count"]
        == 1
    )
    torch.save(torch.rand(2, 5, 4, 4), tmp_path / "wrong.pt")
    with pytest.raises(SystemExit, match=r"shape \(N, 31, 4, 4\).*got \(2, 5, 4, 4\)"):
        main(
            [
                "--model",
                str(model),
                "--features",
                str(tmp_path / "wrong.pt"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
    np.save(tmp_path / "ints.npy", np.zeros((1, 31, 4, 4), dtype=np.int64))
    with pytest.raises(SystemExit, match="must be floating point"):
        main(
            [
                "--model",
                str(model),
                "--features",
                str(tmp_path / "ints.npy"),
                "--out",
                str(tmp_path / "d"),
            ]
        )
    assert not (tmp_path / "c" / "summary.json").exists()


def test_features_files_as_other_tools_write_them_decode_alike(model, tmp_path):
    """Big-endian ``.npy`` (MATLAB, some instruments), ``.npz``, ``.safetensors`` and a saved
    dict, each holding the features alone or beside other arrays under ``features``."""
    inverter = Inverter.load(model)
    features = inverter.features(torch.rand(2, 3, 32, 32))
    array = features.numpy()
    np.save(tmp_path / "big-endian.npy", array.astype(">f4"))
    np.savez(tmp_path / "one.npz", recording=array)
    np.savez(tmp_path / "named.npz", features=array, times=np.arange(2.0))
    save_file({"features": features, "labels": torch.zeros(2)}, tmp_path / "named.safetensors")
    torch.save({"features": features, "subject": torch.tensor(3)}, tmp_path / "named.pt")
    expected = inverter.decode(features).clamp(0, 1)
    for name in ("big-endian.npy", "one.npz", "named.npz", "named.safetensors", "named.pt"):
        loaded = load_features(tmp_path / name)
        assert torch.equal(loaded, features), name
        out = tmp_path / name.replace(".", "_")
        main(["--model", str(model), "--features", str(tmp_path / name), "--out", str(out)])
        decoded = np.asarray(Image.open(out / "features_00001.png"), dtype=np.float32)
        assert np.abs(decoded - expected[1].permute(1, 2, 0).numpy() * 255).max() <= 0.5 + 1e-3
    np.savez(tmp_path / "two.npz", a=array, b=array)
    with pytest.raises(SystemExit, match=r"holds 2 arrays \(a, b\); name one 'features'"):
        main(
            [
                "--model",
                str(model),
                "--features",
                str(tmp_path / "two.npz"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
