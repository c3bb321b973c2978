"""Transformer tokens and embeddings as representations: a plain ViT, Hugging Face models."""

from __future__ import annotations

import pytest
import torch

from featinv import Inverter
from featinv.baseline import OptimizationInverter
from featinv.cli import main
from featinv.cli.evaluate import main as evaluate
from featinv.decoders import FullyConnectedDecoder, SpatialDecoder
from featinv.exported import export_decoder
from featinv.networks import build_networks
from featinv.representations import build_representation
from featinv.representations.huggingface import VISION_MODEL
from featinv.training import InversionModule
from tests.helpers import tiny_vit, trained_checkpoint

VIT = "tests.helpers:tiny_vit"
SMALL = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}
HF_VIT = {"model": "ViTModel", "config": {"image_size": 32, "patch_size": 8, **SMALL}}
HF_CLIP = {
    "model": "CLIPVisionModelWithProjection",
    "config": {"image_size": 32, "patch_size": 8, "projection_dim": 12, **SMALL},
}
CLIP_NORMALIZATION = {"mean": [0.4815, 0.4578, 0.4082], "std": [0.2686, 0.2613, 0.2758]}


@pytest.fixture
def transformers():
    """Hugging Face transformers (an optional dependency; .ci/run installs it)."""
    return pytest.importorskip("transformers", reason="pip install transformers")


def test_a_vit_blocks_tokens_are_its_hidden_state_on_the_patch_grid():
    phi = build_representation("cnn", architecture=VIT, layer="blocks.1")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = phi(images)
        tokens = tiny_vit().tokens(phi.preprocess(images), blocks=2)
    # CLS + 4 registers dropped, 16 patches laid out as the 4x4 grid they came from
    expected = tokens[:, 5:].transpose(1, 2).reshape(2, 16, 4, 4)
    assert torch.equal(features, expected)
    assert phi.output_shape(32) == (16, 4, 4) and phi.stride == 8
    kept = build_representation("cnn", architecture=VIT, layer="blocks.1", prefix_tokens="keep")
    with torch.no_grad():
        both = kept(images)
    assert both.shape == (2, 16 * 6, 4, 4)
    assert torch.equal(both[:, 80:], expected)
    assert torch.equal(both[:, :16, 2, 3], tokens[:, 0])  # CLS, broadcast over the grid


def test_the_head_vector_gets_table_1s_decoder_and_maps_the_spatial_one():
    phi, decoder = build_networks("cnn", {"architecture": VIT, "layer": "head"}, 32, None)
    assert phi.output_shape(32) == (10,) and isinstance(decoder, FullyConnectedDecoder)
    phi, decoder = build_networks("cnn", {"architecture": VIT, "layer": "blocks.0"}, 32, None)
    assert isinstance(decoder, SpatialDecoder)
    assert decoder(phi(torch.rand(1, 3, 32, 32))).shape[-1] >= 32


def test_a_network_built_for_another_size_is_probed_at_the_training_size():
    # position embeddings for 64 px: 224 px would not run, 64 px does
    options = {"architecture": VIT, "layer": "blocks.0", "architecture_options": {"size": 64}}
    phi, _ = build_networks("cnn", options, 64, None)
    assert phi.output_shape(64) == (16, 8, 8)
    with pytest.raises(ValueError, match=r"refuses a 32x32 input .*set data.image_size"):
        phi.output_shape(32)


def test_channel_last_maps_are_recognized_and_can_be_named():
    images = torch.rand(2, 3, 32, 32)
    phi = build_representation("cnn", architecture="tests.helpers:channels_last_net", layer=None)
    with torch.no_grad():
        expected = phi.net.conv(phi.preprocess(images))
        assert torch.equal(phi(images), expected)
    named = build_representation(
        "cnn", architecture="tests.helpers:channels_last_net", layer=None, layout="channels_last"
    )
    assert named.output_shape(32) == (24, 8, 8)


def test_hugging_face_outputs_by_field_and_hidden_state(transformers):
    torch.manual_seed(0)
    hidden = build_representation(
        "cnn",
        architecture=VISION_MODEL,
        architecture_options=HF_VIT,
        layer=None,
        output="hidden_states.2",
    )
    torch.manual_seed(0)  # the same random weights
    block = build_representation(
        "cnn", architecture=VISION_MODEL, architecture_options=HF_VIT, layer="layers.1"
    )
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(hidden(images), block(images))  # the same tokens, two ways named
    assert hidden.output_shape(32) == (16, 4, 4)
    pooled = build_representation(
        "cnn",
        architecture=VISION_MODEL,
        architecture_options=HF_VIT,
        layer=None,
        output="pooler_output",
    )
    assert pooled.output_shape(32) == (16,)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"architecture": VISION_MODEL, "architecture_options": HF_VIT, "output": "pooled"},
            r"has no output 'pooled' .*its outputs: last_hidden_state, pooler_output",
        ),
        (
            {"architecture": VISION_MODEL, "architecture_options": HF_VIT},
            r"outputs a BaseModelOutputWithPooling, not a tensor: name one with the option output",
        ),
        (
            {"architecture": VIT, "architecture_options": {"sise": 32}},
            r"cannot be called with architecture_options \['sise'\].*it takes: size, patch",
        ),
        (
            {"architecture": VISION_MODEL, "architecture_options": {"model": "CLIPModel"}},
            r"takes input_ids first, not pixels",
        ),
        (
            {"architecture": VIT, "layer": "blocks.0", "architecture_options": {"registers": 40}},
            r"gives 57 tokens for a 32x32 input, which no patch grid explains \(tried.*41\+4x4",
        ),
    ],
)
def test_bad_transformer_options_are_one_line_each(options, message):
    if options["architecture"] == VISION_MODEL:
        pytest.importorskip("transformers", reason="pip install transformers")
    options = {"layer": None, **options}
    with pytest.raises(ValueError, match=message):
        build_networks("cnn", options, 32, None)


def _train(tmp_path, monkeypatch, options: str) -> Inverter:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "--model.representation=cnn",
            f"--model.representation_options={options}",
            "--model.decoder_options={fc_width: 16, start_channels: 8, min_width: 8}"
            if "image_embeds" in options
            else "--model.decoder_options={width: 8, max_width: 8, min_width: 8}",
            "--data.image_size=32",
            "--trainer.max_steps=3",
            "--data.batches_per_epoch=3",
            "--data.batch_size=4",
            "--trainer.limit_val_batches=1",
            "--data.num_workers=0",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
    )
    path = tmp_path / "checkpoints" / "cnn" / "last.ckpt"
    assert torch.load(path, weights_only=False)["global_step"] == 3
    module = InversionModule.load_from_checkpoint(path)
    module.eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = module(module.features(images))
    inverter = Inverter.from_checkpoint(path)  # a factory of the installed library: no trust
    assert torch.equal(inverter.reconstruct(images), expected)
    return inverter


def test_a_hugging_face_vit_block_trains_through_train_py_and_reloads(
    tmp_path, monkeypatch, transformers
):
    options = {"architecture": VISION_MODEL, "layer": "layers.1", "architecture_options": HF_VIT}
    inverter = _train(tmp_path, monkeypatch, str(options))
    assert inverter.representation.output_shape(32) == (16, 4, 4)


def test_a_clip_image_embedding_trains_through_train_py_and_reloads(
    tmp_path, monkeypatch, transformers
):
    options = {
        "architecture": VISION_MODEL,
        "layer": None,
        "output": "image_embeds",
        "architecture_options": HF_CLIP,
        "normalization": CLIP_NORMALIZATION,
    }
    inverter = _train(tmp_path, monkeypatch, str(options).replace("None", "null"))
    assert inverter.representation.output_shape(32) == (12,)
    mean = inverter.representation.input_norm.mean.flatten().tolist()
    assert mean == pytest.approx(CLIP_NORMALIZATION["mean"])


def test_the_baselines_objective_falls_on_a_token_layer(photo_batch):
    torch.manual_seed(0)
    phi = build_representation("cnn", architecture=VIT, layer="blocks.1")
    images = torch.nn.functional.interpolate(photo_batch, size=32)
    objective = OptimizationInverter(phi, iterations=30).invert(images, progress=False).objective
    assert (objective[-1] < objective[0]).all(), objective[[0, -1]]


def test_token_layers_evaluate_export_and_load_as_a_cnns_do(tmp_path, photo_folder, monkeypatch):
    drawn = {}
    monkeypatch.setattr(
        "featinv.evaluation.reports.save_layer_plot",
        lambda path, points, layers, network, references: drawn.update(layers=tuple(layers)),
    )
    paths = []
    for layer in ("blocks.1", "blocks.0"):
        paths.append(
            trained_checkpoint(
                tmp_path / f"{layer}.ckpt",
                representation="cnn",
                image_size=32,
                representation_options={"architecture": VIT, "layer": layer},
                decoder_options={"width": 8, "max_width": 8, "min_width": 4},
            )
        )
    report = evaluate(
        [
            *(f"--checkpoint={p}" for p in paths),
            f"--architecture={VIT}",
            "--baseline",
            "--hybrid",
            "--baseline-iterations=2",
            "--hybrid-iterations=2",
            f"--images={photo_folder}",
            "--num-images=2",
            f"--out={tmp_path / 'e'}",
        ]
    )
    kinds = sorted(m["kind"] for m in report["methods"].values())
    assert kinds == ["hybrid"] * 2 + ["learned"] * 2 + ["optimization"] * 2
    assert drawn["layers"] == ("blocks.0", "blocks.1")  # the model's block order
    exported = export_decoder(
        paths[0], tmp_path / "vit.safetensors", include_representation=True, architecture=VIT
    )
    images = torch.rand(2, 3, 32, 32)
    expected = Inverter.from_checkpoint(paths[0], architecture=VIT).reconstruct(images)
    loaded = Inverter.load(exported, architecture=VIT)
    assert torch.equal(loaded.reconstruct(images), expected)


def test_a_local_pretrained_folder_loads_offline(tmp_path, transformers):
    torch.manual_seed(0)
    built = build_representation(
        "cnn", architecture=VISION_MODEL, architecture_options=HF_VIT, layer="layers.0"
    )
    built.net.save_pretrained(tmp_path / "vit")
    loaded = build_representation(
        "cnn",
        architecture=VISION_MODEL,
        architecture_options={"model": "ViTModel", "pretrained": str(tmp_path / "vit")},
        layer="layers.0",
    )
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), built(images))
    with pytest.raises(ValueError, match="failed to build"):
        build_representation(
            "cnn",
            architecture=VISION_MODEL,
            architecture_options={"model": "ViTModel", "pretrained": str(tmp_path / "none")},
            layer="layers.0",
        )
