"""Hybrid inversion: a decoder's reconstruction refined by Algorithm 1."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from featinv import Inverter
from featinv.baseline import OptimizationInverter, hybrid_inverter, refine
from featinv.baseline.hybrid import C_FACTOR, LR_FACTOR
from featinv.cli.evaluate import main as evaluate
from featinv.metrics import feature_error
from featinv.representations import HOG, LBP
from tests.helpers import trained_checkpoint

TINY = {"width": 8, "max_width": 8, "min_width": 8}


def test_a_start_of_the_wrong_shape_names_the_expected_one(photo_batch):
    inverter = OptimizationInverter(HOG(), iterations=2)
    with pytest.raises(ValueError, match=r"init must be images of shape \(5, 3, 64, 64\)"):
        inverter.invert(photo_batch, init=torch.rand(5, 3, 32, 32), progress=False)


def test_refinement_keeps_a_good_start_and_lowers_a_bad_starts_feature_error(photo_batch):
    phi = HOG()
    exact = refine(phi, photo_batch, images=photo_batch, iterations=20)
    # from the photos themselves it stays near them (the features already match; only the
    # regularizers smooth a little), unlike the same 20 steps from noise
    noise = OptimizationInverter(phi, iterations=20).invert(photo_batch, progress=False)
    assert (exact.reconstructions - photo_batch).abs().mean() < 0.05
    assert (noise.reconstructions - photo_batch).abs().mean() > 0.1
    assert (exact.feature_error < noise.feature_error).all()
    blurred = torch.nn.functional.avg_pool2d(photo_batch, 5, 1, 2, count_include_pad=False)
    before = feature_error(phi(blurred), phi(photo_batch))
    after = refine(phi, blurred, images=photo_batch, iterations=20).feature_error
    assert (after < before).all(), (before, after)


def test_the_refinements_constants_derive_from_the_papers():
    paper = OptimizationInverter(HOG()).options
    options = hybrid_inverter(HOG(), iterations=7).options
    assert options.iterations == 7
    assert options.lr == pytest.approx(LR_FACTOR * paper.lr)
    assert options.c == pytest.approx(C_FACTOR * paper.c)
    with pytest.raises(ValueError, match="lbp has no gradient"):
        hybrid_inverter(LBP())


def test_inverter_refines_images_or_features_alike(tmp_path, photo_batch):
    path = trained_checkpoint(tmp_path / "hog.ckpt", image_size=32, decoder_options=TINY)
    inverter = Inverter.from_checkpoint(path)
    images = torch.nn.functional.interpolate(photo_batch, size=32, mode="bilinear")
    from_images = inverter.refine(images, iterations=10)
    from_features = inverter.refine(inverter.features(images), iterations=10)
    assert from_images.shape == (5, 3, 32, 32)
    assert torch.allclose(from_images, from_features, atol=1e-5)
    phi = inverter.representation
    decoded = feature_error(phi(inverter.reconstruct(images).clamp(0, 1)), phi(images))
    refined = feature_error(phi(from_images.clamp(0, 1)), phi(images))
    assert refined.mean() < decoded.mean()


def test_evaluate_adds_a_hybrid_method_and_refuses_it_without_gradients(tmp_path, photo_arrays):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, array in enumerate(photo_arrays[:3]):
        Image.fromarray(array).save(folder / f"p{i}.png")
    hog = trained_checkpoint(tmp_path / "hog.ckpt", image_size=32, decoder_options=TINY)
    common = ["--images", str(folder), "--num-images", "3", "--out", str(tmp_path / "e")]
    evaluate(["--checkpoint", str(hog), "--hybrid", "--hybrid-iterations", "5", *common])
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    hybrid = report["methods"]["hybrid/" + tmp_path.name + "/hog"]
    assert hybrid["kind"] == "hybrid" and hybrid["options"]["iterations"] == 5
    assert hybrid["feature_error"] < report["methods"][tmp_path.name + "/hog"]["feature_error"]
    lbp = trained_checkpoint(
        tmp_path / "lbp.ckpt", representation="lbp", image_size=32, decoder_options=TINY
    )
    with pytest.raises(SystemExit, match="--hybrid: lbp has no gradient"):
        evaluate(["--checkpoint", str(lbp), "--hybrid", *common])
    with pytest.raises(SystemExit, match="give --checkpoint"):
        evaluate(["--hybrid", "--representation", "hog", "--baseline", *common])
