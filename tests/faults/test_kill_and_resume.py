"""A training process killed with SIGKILL mid-epoch resumes with ``--ckpt_path last``.

The resumed run continues from the saved global step with the saved Adam state (its step
counters keep counting) and the saved learning-rate schedule position.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TRAIN = Path(__file__).resolve().parents[2] / "train.py"
ARGS = [
    "--data.num_workers=0",
    "--data.image_size=32",
    "--data.batches_per_epoch=1000",  # the kill lands mid-epoch
    "--model.decoder_options={width: 8, max_width: 8, min_width: 8}",
    "--model.lr_decay_start=0.0",  # the schedule moves every step: its position is checked
    "--resume_checkpoint.every_n_train_steps=5",
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
]


def _saved(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_continues_step_optimizer_and_schedule(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    last = tmp_path / "checkpoints" / "hog" / "last.ckpt"
    first = subprocess.Popen(
        [sys.executable, str(TRAIN), *ARGS, "--trainer.max_steps=100000", "--trainer.logger=false"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if last.exists() and _saved(last)["global_step"] >= 15:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint at step 15 within 2 minutes")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    before = _saved(last)
    saved_step = before["global_step"]
    assert 15 <= saved_step < 1000  # killed mid-epoch, before any epoch ended

    resumed = subprocess.run(
        [
            sys.executable,
            str(TRAIN),
            *ARGS,
            f"--trainer.max_steps={saved_step + 10}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir=logs",
            "--ckpt_path=last",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _saved(last)
    assert after["global_step"] == saved_step + 10
    adam_before = before["optimizer_states"][0]["state"][0]["step"]
    adam_after = after["optimizer_states"][0]["state"][0]["step"]
    assert float(adam_before) == saved_step and float(adam_after) == saved_step + 10
    schedule = after["lr_schedulers"][0]
    assert schedule["last_epoch"] == saved_step + 10  # the schedule kept its position
    # the loss curve continues: the resumed run logs steps after the saved one, never from 0
    metrics = next((tmp_path / "logs").rglob("metrics.csv"))
    steps = [int(r["step"]) for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    assert steps and min(steps) >= saved_step
