"""DDP streaming on CPU: 2 gloo processes over real shards, checked against one process.

Training streams resampled shards, an epoch being a number of batches per rank; validation
reads whole shards split across ranks and workers; the metric is reduced across ranks.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from featinv.data.shard_writer import write_shards
from tests.ddp_script import DEEPSIM_LOSS, Probe, build

SCRIPT = Path(__file__).resolve().parent / "ddp_script.py"
ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTED_VARIABLES = {"MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                         "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE"}  # fmt: skip


def _write_photo_shards(photo_arrays: list[np.ndarray], root: Path) -> set[str]:
    """Train shards (5 photos) and 4 validation shards of 3 crops each; the validation keys."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("val", 12)):
        folder = root / f"{split}-src"
        folder.mkdir(parents=True)
        for i in range(count):
            photo = photo_arrays[i % len(photo_arrays)]
            top, left = rng.integers(0, photo.shape[0] - 64), rng.integers(0, photo.shape[1] - 64)
            Image.fromarray(photo[top : top + 64, left : left + 64]).save(folder / f"{i:02d}.png")
        write_shards(folder, root / split, size=40, samples_per_shard=3, progress=False)
    # one corrupt sample in a shard of each rank (rank r reads shards r, r + 2)
    for shard in ("shard-000000.tar", "shard-000001.tar"):
        with tarfile.open(root / "val" / shard, "a") as tar:
            info = tarfile.TarInfo(f"corrupt_{shard[6:12]}.jpg")
            info.size = 9
            tar.addfile(info, io.BytesIO(b"not a jpg"))
    return {f"{i:02d}" for i in range(12)}


def _run_two_processes(tmp_path: Path, *args: str) -> list[dict]:
    """Run ``ddp_script.py`` as 2 gloo processes; what each rank saved."""
    # a clean distributed environment on a free port (another test may hold one in-process)
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env.update(PYTHONPATH=str(ROOT), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path / "shards"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.slow
def test_two_ddp_processes_agree_with_one(tmp_path, photo_arrays):
    val_keys = _write_photo_shards(photo_arrays, tmp_path / "shards")
    ranks = _run_two_processes(tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [4, 4]  # 2 epochs of 2 batches per rank

    # DDP kept the replicas identical: every decoder tensor is bitwise equal on both ranks.
    first, second = (r["decoder"] for r in ranks)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)

    # Procedural images were mixed in on both ranks, and each rank made its own.
    made = [r["procedural"] for r in ranks]
    assert all(made)
    assert not any(torch.equal(a, b) for a in made[0].values() for b in made[1].values())

    # Validation: each sample once, on exactly one rank.
    seen = [set(r["keys"]) for r in ranks]
    assert all(len(s) == len(r["keys"]) and s for s, r in zip(seen, ranks, strict=True))
    assert seen[0] | seen[1] == val_keys and not seen[0] & seen[1]

    # The reduced error equals one process validating the same weights on the same data.
    module, data = build(tmp_path / "shards")
    module.decoder.load_state_dict(first)
    probe = Probe(tmp_path)
    L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[probe]
    ).validate(module, data, verbose=False)
    assert set(probe.keys) == val_keys
    single = module.trainer.callback_metrics
    # corrupt samples are counted over both ranks' loaders
    assert ranks[0]["metrics"]["val/skipped_samples"] == 2 == float(single["val/skipped_samples"])
    for name in ("val/normalized_error", "val/normalizer", "val/mean_image_error"):
        assert ranks[0]["metrics"][name] == ranks[1]["metrics"][name]
        assert ranks[0]["metrics"][name] == pytest.approx(float(single[name]), rel=1e-6), name


@pytest.mark.slow
def test_two_ddp_processes_train_adversarially_in_step(tmp_path, photo_arrays):
    _write_photo_shards(photo_arrays, tmp_path / "shards")
    ranks = _run_two_processes(tmp_path, "deepsim")
    # 2 epochs of 2 batches per rank, each a discriminator step and a decoder step
    assert [r["global_step"] for r in ranks] == [8, 8]
    for network in ("decoder", "discriminator"):
        first, second = (r[network] for r in ranks)
        assert first and first.keys() == second.keys()
        assert all(torch.equal(first[name], second[name]) for name in first), network
    # both networks moved from their (seeded, shared) initial weights
    module, _ = build(tmp_path / "shards", DEEPSIM_LOSS)
    for network in ("decoder", "discriminator"):
        initial = getattr(module, network).state_dict()
        assert any(not torch.equal(initial[k], ranks[0][network][k]) for k in initial), network
    metrics = ranks[0]["metrics"]
    assert ranks[1]["metrics"]["val/feature_error"] == metrics["val/feature_error"]
    assert metrics["val/sharpness"] > 0 and metrics["val/feature_error"] > 0
