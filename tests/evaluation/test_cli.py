"""evaluate.py end to end: the schema of report.json, the figures, and clear input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featinv import save_checkpoint
from featinv.cli.evaluate import main
from featinv.data.transforms import EvalTransform
from featinv.training import InversionModule
from tests.helpers import trained_checkpoint

METHOD_KEYS = {
    "representation",
    "layer",
    "kind",
    "normalized_error",
    "normalized_error_std",
    "feature_error",
    "sharpness",
    "seconds_per_image",
    "device",
}


@pytest.fixture
def hog_checkpoint(tmp_path) -> Path:
    return trained_checkpoint(
        tmp_path / "hog.ckpt", image_size=32, decoder_options={"width": 8, "max_width": 8}
    )


def test_learned_and_baseline_in_one_call(tmp_path, hog_checkpoint, photo_folder):
    out = tmp_path / "eval"
    report = main(
        [
            "--checkpoint",
            str(hog_checkpoint),
            "--baseline",
            "--baseline-iterations",
            "3",
            "--images",
            str(photo_folder),
            "--num-images",
            "4",
            "--out",
            str(out),
            "--batch-size",
            "2",
        ]
    )
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["num_images"] == 4 and saved["image_size"] == 32 and saved["normalizer"] > 0
    kinds = {m["kind"] for m in saved["methods"].values()}
    assert kinds == {"learned", "optimization"}
    for entry in saved["methods"].values():
        assert set(entry) >= METHOD_KEYS
        assert entry["normalized_error"] > 0 and entry["seconds_per_image"] > 0
        assert entry["feature_error"] is not None
    assert (out / "grid.png").exists() and (out / "report.md").exists()
    with Image.open(out / "grid.png") as grid:
        assert grid.width > 3 * 32  # original + two methods side by side
    assert "learned" in (out / "report.md").read_text()


def test_layer_curve_for_several_alexnet_layers(tmp_path, photo_folder):
    paths = []
    for layer in ("conv1", "conv5"):
        paths += [
            "--checkpoint",
            str(
                trained_checkpoint(
                    tmp_path / f"{layer}.ckpt",
                    representation="alexnet",
                    image_size=227,
                    representation_options={"layer": layer, "weights": "random"},
                    decoder_options={"width": 8, "max_width": 8, "min_width": 4},
                )
            ),
        ]
    main([*paths, "--images", str(photo_folder), "--num-images", "3", "--out", str(tmp_path / "e")])
    assert (tmp_path / "e" / "layers.png").exists()
    layers = {
        m["layer"]
        for m in json.loads((tmp_path / "e" / "report.json").read_text())["methods"].values()
    }
    assert layers == {"conv1", "conv5"}


def test_layer_curve_for_any_network_in_its_own_layer_order(tmp_path, photo_folder, monkeypatch):
    drawn = {}

    def capture(path, points, layers, network, references):
        drawn.update(path=path, points=sorted(points), layers=tuple(layers), network=network)
        drawn.update(references=list(references))

    monkeypatch.setattr("featinv.evaluation.reports.save_layer_plot", capture)
    paths = []
    for layer in ("pool2", "conv1_2"):
        options = {"architecture": "vgg16", "layer": layer, "weights": "random"}
        checkpoint = trained_checkpoint(
            tmp_path / f"{layer}.ckpt",
            representation="cnn",
            image_size=32,
            representation_options=options,
            decoder_options={"width": 8, "max_width": 8, "min_width": 4},
        )
        paths += ["--checkpoint", str(checkpoint)]
    report = main(
        [
            *paths,
            "--baseline",
            "--baseline-iterations",
            "2",
            "--images",
            str(photo_folder),
            "--num-images",
            "2",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert drawn["network"] == "vgg16" and drawn["path"].name == "layers.png"
    assert drawn["layers"] == ("conv1_2", "pool2")  # the evaluated layers, in network order
    kinds = {(layer, kind) for layer, _, kind in drawn["points"]}
    assert kinds == {(y, k) for y in ("conv1_2", "pool2") for k in ("learned", "optimization")}
    own = report["mean_image"]["32"]["normalized_error"]
    others = report["others_mean_image"]["32"]["normalized_error"]
    assert drawn["references"] == [
        ("photos' own mean image", own),
        ("mean image of the other photos", others),
    ]
    assert others == pytest.approx(own * 2)  # two photos: n / (n - 1) = 2


def test_different_image_sizes_are_evaluated_each_at_its_own(
    tmp_path, hog_checkpoint, photo_folder
):
    other = trained_checkpoint(tmp_path / "hog48.ckpt", image_size=48, decoder_options={"width": 8})
    report = main(
        [
            "--checkpoint",
            str(hog_checkpoint),
            "--checkpoint",
            str(other),
            "--images",
            str(photo_folder),
            "--num-images",
            "3",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    sizes = {m["image_size"] for m in report["methods"].values()}
    assert sizes == {32, 48} and set(report["normalizers"]) == {"32", "48"}
    assert any("different image sizes" in note for note in report["notes"])


def test_more_images_asked_than_exist_uses_what_exists(tmp_path, hog_checkpoint, photo_folder):
    report = main(
        [
            "--checkpoint",
            str(hog_checkpoint),
            "--images",
            str(photo_folder),
            "--num-images",
            "50",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert report["num_images"] == 5
    assert any("asked for 50 images" in note for note in report["notes"])


def test_bad_inputs_get_one_clear_line(tmp_path, hog_checkpoint):
    junk = tmp_path / "junk.ckpt"
    torch.save({"state_dict": {}}, junk)
    with pytest.raises(SystemExit, match="not a featinv checkpoint"):
        main(["--checkpoint", str(junk), "--out", str(tmp_path / "e")])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SystemExit, match="need at least 2 decodable images"):
        main(
            [
                "--checkpoint",
                str(hog_checkpoint),
                "--images",
                str(empty),
                "--out",
                str(tmp_path / "e"),
            ]
        )
    with pytest.raises(SystemExit, match="nothing to evaluate"):
        main(["--out", str(tmp_path / "e")])
    with pytest.raises(SystemExit, match="matches no files"):
        main(["--checkpoint", str(hog_checkpoint), "--shards", str(tmp_path / "x-{0..3}.tar")])


def test_default_images_are_the_bundled_validation_photos(tmp_path, hog_checkpoint):
    report = main(
        ["--checkpoint", str(hog_checkpoint), "--num-images", "7", "--out", str(tmp_path / "e")]
    )
    assert report["num_images"] == 7
    (entry,) = report["methods"].values()
    assert np.isfinite(entry["normalized_error"]) and entry["kind"] == "learned"


def test_decoders_of_one_representation_from_several_runs_are_named_apart(tmp_path, photo_folder):
    runs = []
    for run in ("mse", "deepsim"):
        (tmp_path / run / "hog").mkdir(parents=True)
        runs.append(
            trained_checkpoint(
                tmp_path / run / "hog" / "best.ckpt",
                image_size=32,
                decoder_options={"width": 8, "max_width": 8},
            )
        )
    args = ["--images", str(photo_folder), "--num-images", "2", "--out", str(tmp_path / "e")]
    for path in runs:
        args += ["--checkpoint", str(path)]
    report = main(args)
    assert list(report["methods"]) == ["mse/hog/best", "deepsim/hog/best"]
    for entry in report["methods"].values():
        assert 0 < entry["sharpness"] < 2


def test_constants_are_scored_beside_the_decoders(tmp_path, photo_folder, photo_arrays):
    """The photos' own mean image and the checkpoint's training mean image, each scored as a
    prediction for every photo, match a NumPy computation of ||x - c|| / N."""
    torch.manual_seed(0)
    module = InversionModule(image_size=32, decoder_options={"width": 8, "max_width": 8})
    seen = torch.rand(6, 3, 32, 32) * torch.tensor([0.9, 0.5, 0.2]).view(1, 3, 1, 1)
    module._accumulate_train_images(seen)
    checkpoint = save_checkpoint(tmp_path / "hog.ckpt", module)
    out = tmp_path / "eval"
    report = main(
        ["--checkpoint", str(checkpoint), "--images", str(photo_folder), "--out", str(out)]
    )
    transform = EvalTransform(32)
    photos = np.stack([transform(a).numpy() for a in photo_arrays]).astype(np.float64)
    flat = photos.reshape(len(photos), -1)
    normalizer = np.mean([np.linalg.norm(a - b) for i, a in enumerate(flat) for b in flat[i + 1 :]])

    def error(constant: np.ndarray) -> float:
        return float(np.mean(np.linalg.norm(flat - constant.reshape(1, -1), axis=1)) / normalizer)

    own = report["mean_image"]["32"]
    assert own["normalized_error"] == pytest.approx(error(flat.mean(0)), rel=1e-4)
    assert own["structure_error"] <= own["normalized_error"] + 1e-6
    others = np.mean(
        [np.linalg.norm(x - np.delete(flat, i, 0).mean(0)) for i, x in enumerate(flat)]
    )
    assert report["others_mean_image"]["32"]["normalized_error"] == pytest.approx(
        others / normalizer, rel=1e-4
    )
    (entry,) = report["methods"].values()
    scored = entry["train_mean_image"]["normalized_error"]
    assert scored == pytest.approx(error(seen.double().mean(0).numpy()), rel=1e-4)
    text = (out / "report.md").read_text()
    assert "the photos' own mean image" in text and "training data's mean image of" in text
    assert "the mean image of the other photos" in text
