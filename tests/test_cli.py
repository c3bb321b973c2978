"""``train.py`` as a user meets it: bad options end in one line, and the output is quiet."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featinv.cli import main
from featinv.runtime import keep_freed_memory

TRAIN = Path(__file__).resolve().parents[1] / "train.py"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.image_size", "3"], r"data\.image_size\) must be at least 8 pixels, got 3"),
        (["--model.lr", "-1"], r"model\.lr must be positive, got -1\.0"),
        (["--model.betas", "[0.9, 1.5]"], r"model\.betas must be \[beta1, beta2\]"),
        (["--data.batch_size", "0"], r"data\.batch_size must be at least 1, got 0"),
        (["--data.num_workers", "-1"], r"data\.num_workers must be at least 0"),
        (["--data.synthetic_fraction", "2"], r"data\.synthetic_fraction must be in \[0, 1\]"),
        (["--model.representation", "hgo"], r"unknown representation 'hgo'; valid names: "),
        (
            ["--model.decoder_options", "{min_bottleneck: 0}"],
            r"decoder option min_bottleneck must be an integer of at least 1, got 0",
        ),
        (
            ["--model.representation", "lbp", "--data.image_size", "8"],
            r"image_size must be at least 16 for lbp, got 8",
        ),
        (["--data.train_shards", "/nowhere/shard-{0..3}.tar"], r"matches no files"),
        (
            [
                "--model.representation=cnn",
                "--model.representation_options={architecture: vgg16, layer: conv5_4}",
            ],
            r"vgg16 has no layer 'conv5_4'; nearest: conv5_3",
        ),
        (
            [
                "--model.representation=cnn",
                "--model.representation_options={architecture: 'nope.nets:build', layer: x}",
            ],
            r"architecture 'nope\.nets:build' does not import",
        ),
    ],
)
def test_a_bad_option_ends_in_one_line_that_names_it(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*args, "--trainer.logger", "false"])
    text = str(stop.value)
    assert text.startswith("featinv-train: error: ") and "\n" not in text, text
    assert re.search(message, text), text
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing was trained


def test_a_choice_outside_its_literal_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--model.nonfinite_loss", "maybe"])
    assert stop.value.code == 2
    assert "'stop', 'skip'" in capsys.readouterr().err


def test_from_a_shell_a_bad_option_prints_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, str(TRAIN), "--model.lr", "-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "featinv-train: error: model.lr must be positive, got -1.0"
    )


def test_help_lists_the_training_options_without_warnings(tmp_path):
    done = subprocess.run(
        [sys.executable, str(TRAIN), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0 and "--model.nonfinite_loss {stop,skip}" in done.stdout
    assert done.stderr == "", done.stderr


@pytest.mark.slow
def test_a_run_prints_nothing_a_user_cannot_act_on(tmp_path):
    """wandb, webdataset and Lightning notices that do not apply are gone; the run's own
    lines (the summary, the wandb sync hint) remain."""
    done = subprocess.run(
        [
            sys.executable,
            str(TRAIN),
            "--trainer.max_steps=2",
            "--data.batches_per_epoch=2",
            "--trainer.log_every_n_steps=1",
            "--data.num_workers=0",
            "--data.image_size=32",
            "--model.decoder_options={width: 8, max_width: 8, min_width: 8}",
            "--trainer.enable_progress_bar=false",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "false"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    for noise in (
        "anonymous setting",
        "git root",
        "with_length",
        "LeafSpec",
        "Tip:",
        "Warning",
        "will override existing callbacks",
        "args parameter",
    ):
        assert noise not in output, noise
    assert "== featinv training summary" in done.stdout
    assert "wandb sync" in output


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory sets glibc's allocator; this C library is not glibc",
)
def test_training_reuses_the_memory_a_step_freed_without_page_faults():
    assert keep_freed_memory()
    torch.ones(12 << 20)  # 48 MB: past glibc's largest adaptive mmap threshold (32 MB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(12 << 20)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 1000, f"{faults} page faults: 48 MB of fresh pages are about 12,000"
