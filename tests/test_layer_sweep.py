"""featinv-layers: a decoder per layer in its own process, then one evaluation of them all."""

from __future__ import annotations

import json

import pytest
import torch

from featinv.cli.layers import main
from tests.helpers import tiny_net

TINY_RUN = [
    "--train-arg=--model.decoder_options={width: 8, max_width: 8, min_width: 8}",
    "--train-arg=--data.image_size=32",
    "--train-arg=--trainer.max_steps=2",
    "--train-arg=--data.batches_per_epoch=2",
    "--train-arg=--data.batch_size=4",
    "--train-arg=--trainer.limit_val_batches=1",
    "--train-arg=--data.num_workers=0",
    "--train-arg=--trainer.enable_progress_bar=false",
]


@pytest.mark.slow
def test_the_sweep_trains_each_layer_then_scores_all_three_methods(tmp_path, photo_folder):
    weights = tmp_path / "tiny.pth"
    torch.save(tiny_net().state_dict(), weights)
    out = tmp_path / "sweep"
    arguments = [
        "--architecture=tests.helpers:tiny_net",
        f"--weights={weights}",
        "--layers",
        "0",
        "2",
        "--minutes=2",
        f"--out={out}",
        f"--images={photo_folder}",
        "--num-images=2",
        "--baseline-iterations=2",
        *TINY_RUN,
    ]
    result = main(arguments)
    assert [facts["layer"] for facts in result["training"]] == ["0", "2"]
    assert all(facts["steps"] == 2 for facts in result["training"])
    kinds = sorted(m["kind"] for m in result["evaluation"]["methods"].values())
    assert kinds == ["hybrid"] * 2 + ["learned"] * 2 + ["optimization"] * 2
    assert (out / "layers.png").stat().st_size > 0
    table = (out / "sweep.md").read_text()
    assert "| 0 |" in table and "| 2 |" in table
    # run again: the trained layers are reused, not trained again
    stamp = (out / "checkpoints" / "0" / "cnn" / "best.ckpt").stat().st_mtime_ns
    again = main(arguments)
    assert (out / "checkpoints" / "0" / "cnn" / "best.ckpt").stat().st_mtime_ns == stamp
    assert again["training"] == json.loads((out / "sweep.json").read_text())["training"]


def test_a_missing_weights_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"featinv-layers: error: --weights .*nope\.pth"):
        main(
            ["--weights", str(tmp_path / "nope.pth"), "--layers", "conv1_2", "--out", str(tmp_path)]
        )
