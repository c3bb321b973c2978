"""The analyses' definitions (Sect. 4.3-4.5), each checked on its own, then end to end."""

from __future__ import annotations

import json

import pytest
import torch

from featinv.cli.evaluate import main
from featinv.evaluation.analysis import (
    HistogramSampler,
    TruncatedGaussianSampler,
    binarize,
    dropout,
    dropout_smallest,
    imagenet_classes,
    interpolate,
    top5_variants,
)
from tests.helpers import trained_checkpoint


@pytest.fixture
def relu_features() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 8, 3, 3).clamp_min(0)  # sparse, non-negative like AlexNet maps


def test_binarize_keeps_signs_norm_and_has_one_magnitude():
    torch.manual_seed(0)
    signed = torch.randn(3, 50)
    signed[:, :10] = 0
    out = binarize(signed)
    torch.testing.assert_close(out.norm(dim=1), signed.norm(dim=1))
    assert torch.equal(out.sign(), signed.sign())
    for row in out:
        assert row[row != 0].abs().unique().numel() == 1


def test_dropout_drops_exactly_half_at_random_and_keeps_the_norm(relu_features):
    dense = relu_features + 1  # no zeros, so every dropped entry is visible
    out = dropout(dense, 0.5, torch.Generator().manual_seed(1)).reshape(4, -1)
    assert ((out == 0).sum(dim=1) == 36).all()  # 72 entries per vector
    torch.testing.assert_close(out.norm(dim=1), dense.reshape(4, -1).norm(dim=1))
    other = dropout(dense, 0.5, torch.Generator().manual_seed(2)).reshape(4, -1)
    assert not torch.equal(out == 0, other == 0)


def test_dropout_smallest_removes_the_least_non_zero_entries(relu_features):
    rows = relu_features.reshape(4, -1)
    out = dropout_smallest(relu_features).reshape(4, -1)
    for before, after in zip(rows, out, strict=True):
        nonzero = before[before != 0]
        kept = after != 0
        assert int(kept.sum()) == nonzero.numel() - round(0.5 * nonzero.numel())
        assert before[kept].min() >= before[(before != 0) & ~kept].max()  # the largest survive
    torch.testing.assert_close(out.norm(dim=1), rows.norm(dim=1))


def test_interpolation_ends_are_the_two_vectors():
    a, b = torch.rand(31, 4, 4), torch.rand(31, 4, 4)
    path = interpolate(a, b, 5)
    assert path.shape == (5, 31, 4, 4)
    assert torch.equal(path[0], a) and torch.allclose(path[-1], b)
    torch.testing.assert_close(path[2], (a + b) / 2)
    with pytest.raises(ValueError, match="at least 2 steps"):
        interpolate(a, b, 1)


def test_histogram_samples_have_the_measured_sparsity(relu_features):
    torch.manual_seed(0)
    features = torch.randn(400, 64).clamp_min(0) * torch.rand(64)  # ~50% zeros, varied scales
    features[:, :8] = 0  # some dimensions never fire
    sampler = HistogramSampler().fit(features)
    drawn = sampler.sample(2000, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (2000, 64)
    assert abs(float((drawn == 0).float().mean()) - sampler.measured_sparsity) < 0.01
    assert (drawn[:, :8] == 0).all()
    assert (drawn.max(0).values <= features.max(0).values + 1e-5).all()  # inside the histograms
    doubled = sampler.sample(10, alpha=2.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        doubled, 2 * sampler.sample(10, 1.0, torch.Generator().manual_seed(0))
    )


def test_truncated_gaussian_has_the_measured_sparsity():
    torch.manual_seed(0)
    features = torch.randn(500, 100).add(0.3).clamp_min(0)
    sampler = TruncatedGaussianSampler().fit(features)
    drawn = sampler.sample(1000, generator=torch.Generator().manual_seed(0))
    assert abs(float((drawn == 0).float().mean()) - sampler.measured_sparsity) < 0.01
    assert (drawn >= 0).all()


def test_top5_variants():
    scores = torch.arange(10.0).repeat(2, 1)
    variants = top5_variants(scores)
    assert torch.equal(variants["all activations"], scores)
    assert variants["top 5 only"][0].tolist() == [0, 0, 0, 0, 0, 5, 6, 7, 8, 9]
    assert variants["all but top 5"][0].tolist() == [0, 1, 2, 3, 4, 0, 0, 0, 0, 0]
    assert len(imagenet_classes()) == 1000 and imagenet_classes()[948] == "Granny Smith"


@pytest.fixture
def conv_checkpoint(tmp_path):
    return trained_checkpoint(
        tmp_path / "conv5.ckpt",
        representation="alexnet",
        image_size=227,
        representation_options={"layer": "conv5", "weights": "random"},
        decoder_options={"width": 8, "max_width": 8, "min_width": 4},
    )


def _fc8_checkpoint(tmp_path, weights: str):
    return trained_checkpoint(
        tmp_path / "fc8.ckpt",
        representation="alexnet",
        image_size=227,
        representation_options={"layer": "fc8", "weights": weights},
        decoder_options={"fc_width": 16, "start_channels": 8},
    )


@pytest.mark.parametrize("experiment", ["perturb", "interpolate", "sample"])
def test_experiments_end_to_end(tmp_path, conv_checkpoint, experiment):
    out = tmp_path / experiment
    numbers = main(
        [
            "--experiment",
            experiment,
            "--checkpoint",
            str(conv_checkpoint),
            "--num-images",
            "6",
            "--out",
            str(out),
            "--steps",
            "4",
            "--samples",
            "4",
        ]
    )
    saved = json.loads((out / f"{experiment}.json").read_text())
    assert {k: v for k, v in numbers.items() if k != "notes"} == saved
    assert list(out.glob("*.png"))
    if experiment == "perturb":
        assert set(saved["normalized_error"]) >= {
            "unperturbed",
            "binarized",
            "dropout",
            "drop least",
            "dropout+bin",
            "drop least+bin",
        }
    if experiment == "interpolate":
        assert [p["images"] for p in saved["pairs"]] == [[0, 1], [2, 3]]
    if experiment == "sample":
        assert saved["histogram"]["measured_sparsity"] > 0


def test_interpolation_ends_reconstruct_the_two_images(tmp_path, conv_checkpoint):
    from featinv import Inverter

    inverter = Inverter.from_checkpoint(conv_checkpoint)
    images = torch.rand(2, 3, 227, 227)
    features = inverter.features(images)
    path = inverter.decode(interpolate(features[0], features[1], 3))
    ends = inverter.reconstruct(images)
    torch.testing.assert_close(path[0], ends[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(path[-1], ends[1], atol=1e-5, rtol=0)


def _top5(checkpoint, out, *extra: str) -> dict:
    """``evaluate.py --experiment top5`` on a checkpoint; returns its JSON numbers."""
    return main(
        ["--experiment", "top5", "--checkpoint", str(checkpoint), "--out", str(out), *extra]
    )


def test_top5_on_fc8_and_refused_elsewhere(tmp_path, conv_checkpoint):
    fc8 = _fc8_checkpoint(tmp_path, "random")
    numbers = _top5(fc8, tmp_path / "t", "--num-images", "3")
    assert numbers["weights"] == "random" and (tmp_path / "t" / "top5.png").exists()
    with pytest.raises(SystemExit, match=r"top5 inverts class scores .* alexnet-conv5"):
        _top5(conv_checkpoint, tmp_path / "u")


def test_top5_names_the_predicted_class_when_weights_come_from_a_file(tmp_path):
    from featinv.representations import AlexNet

    weights = tmp_path / "caffenet.pth"
    torch.save(AlexNet("fc8", weights="random").net.state_dict(), weights)
    fc8 = _fc8_checkpoint(tmp_path, str(weights))
    numbers = _top5(fc8, tmp_path / "t", "--num-images", "2")
    assert numbers["weights"] == "real"
    for predictions in numbers["predictions"].values():
        assert len(predictions) == 2
        assert all(
            p["class"] in imagenet_classes() and 0 < p["confidence"] <= 1 for p in predictions
        )
