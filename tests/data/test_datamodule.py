"""The data module under several processes: epoch length per rank, enough validation shards."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from featinv.data.bundled import bundled_shards
from featinv.data.datamodule import InversionDataModule
from featinv.data.loader_workers import init_loader_worker
from featinv.data.shards import expand_shards
from featinv.reliability import OptionError
from featinv.training.termination import TerminationCheckpoint


def _data(world_size: int, **options) -> InversionDataModule:
    data = InversionDataModule(**{"num_workers": 0, **options})
    data.setup("fit")
    data.trainer = SimpleNamespace(world_size=world_size)
    return data


@pytest.mark.parametrize(("processes", "batches"), [(1, 40), (2, 20), (8, 5), (3, 14)])
def test_an_epoch_of_samples_is_split_over_the_processes(processes, batches):
    data = _data(processes, batch_size=32, samples_per_epoch=1280)
    assert data.batches_per_rank() == batches
    assert len(data.train_dataloader()) == batches


def test_batches_per_epoch_is_per_process_when_no_sample_count_is_given():
    assert _data(4, batches_per_epoch=7).batches_per_rank() == 7


def test_more_processes_than_validation_shards_is_refused_by_name():
    assert len(expand_shards(bundled_shards()["val"])) == 5
    with pytest.raises(ValueError, match=r"5 shard\(s\) for 6 processes"):
        _data(6).val_dataloader()
    _data(5).val_dataloader()  # one shard each is enough


def test_procedural_images_are_mixed_into_training_batches():
    data = _data(1, batch_size=50, synthetic_fraction=0.5, crop_scale=(0.25, 1.0), seed=0)
    batches = [b for _, b in zip(range(4), data.train_dataloader(), strict=False)]
    keys = [k for b in batches for k in b["key"]]
    share = sum(k.startswith("procedural") for k in keys) / len(keys)
    assert 0.35 < share < 0.65  # 200 samples at 0.5: 4 standard deviations
    assert all(b["image"].shape == (50, 3, 64, 64) and b["image"].dtype == torch.uint8
               for b in batches)  # fmt: skip


def _first_batches(count: int, **options) -> list[dict]:
    data = _data(1, batch_size=16, synthetic_fraction=0.5, crop_scale=(0.25, 1.0), **options)
    loader = data.train_dataloader()
    return [b for _, b in zip(range(count), loader, strict=False)]


def test_a_seeded_training_stream_reads_the_same_samples_in_the_same_order():
    first, again, other = (_first_batches(6, seed=s) for s in (0, 0, 1))
    photos = [k for b in first for k in b["key"] if not k.startswith("procedural")]
    assert len(set(photos)) > 1
    for a, b in zip(first, again, strict=True):
        assert a["key"] == b["key"] and torch.equal(a["image"], b["image"])
    assert [b["key"] for b in first] != [b["key"] for b in other]


def test_loader_workers_of_a_seeded_stream_read_differently():
    first, second = _first_batches(2, seed=0, num_workers=2)  # one batch from each worker
    assert first["key"] != second["key"]
    assert not torch.equal(first["image"], second["image"])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"synthetic_fraction": 1.5}, r"data.synthetic_fraction must be in \[0, 1\]"),
        ({"synthetic_fraction": -0.1}, r"data.synthetic_fraction must be in \[0, 1\]"),
        ({"seed": -1}, "data.seed must be a non-negative integer"),
        ({"image_size": 2048, "synthetic_fraction": 0.5}, "8 to 1024 pixels wide"),
        ({"image_size": 3}, "data.image_size must be at least 8"),
        ({"crop_scale": (0.5, 1.5)}, "data.crop_scale must be"),
        ({"saturation": (1.0, 0.5)}, "data.saturation must be"),
        ({"colour_prior": (0.5, 1.2, 0.5)}, "data.colour_prior must be"),
    ],
)
def test_impossible_data_options_are_refused_before_anything_is_built(option, message):
    with pytest.raises(OptionError, match=message):
        InversionDataModule(**option)


def test_colour_prior_brings_the_training_stream_to_that_mean_colour(photo_batch):
    prior = (0.485, 0.456, 0.406)
    data = InversionDataModule(num_workers=0, colour_prior=prior, saturation=(0.0, 1.0))
    data.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    pixels = (photo_batch * 255).round().to(torch.uint8)
    batches = [data.on_after_batch_transfer({"image": pixels.clone()}, 0) for _ in range(50)]
    stream = torch.cat([b["image"] for b in batches]).mean(dim=(0, 2, 3))
    assert torch.allclose(stream, torch.tensor(prior), atol=0.01)  # up to the clamp at 1
    assert not torch.allclose(photo_batch.mean(dim=(0, 2, 3)), torch.tensor(prior), atol=0.03)
    # the running mean behind the gains survives a checkpoint
    resumed = InversionDataModule(num_workers=0, colour_prior=prior)
    resumed.load_state_dict(data.state_dict())
    assert resumed.colour_count == 50 * len(photo_batch)
    # validation batches are only converted to float, never augmented
    data.trainer = SimpleNamespace(training=False)
    converted = data.on_after_batch_transfer({"image": pixels}, 0)["image"]
    assert converted.dtype == torch.float32 and torch.equal(converted * 255, pixels.float())


def _in_a_fork(target, *args) -> tuple[object, int | None]:
    """What ``target(*args, queue)`` puts on the queue in a forked process (as a loader worker
    is started), and that process's exit code."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=target, args=(*args, queue))
    worker.start()
    result = queue.get(timeout=30)
    worker.join(timeout=30)
    return result, worker.exitcode


def _niceness_after_worker_start(yield_cpu: bool, queue: multiprocessing.Queue) -> None:
    init_loader_worker(0, yield_cpu=yield_cpu)
    queue.put(os.nice(0))


@pytest.mark.skipif(
    not hasattr(os, "nice"), reason="os.nice does not exist here: process priorities are POSIX-only"
)
@pytest.mark.parametrize(("device", "lowest"), [("cpu", True), ("meta", False)])
def test_loader_workers_yield_the_cores_to_a_step_on_the_cpu(device, lowest):
    data = InversionDataModule()
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    init = data._worker_init()
    assert init.keywords == {"yield_cpu": lowest}
    niceness, _ = _in_a_fork(_niceness_after_worker_start, lowest)
    assert (niceness == 19) if lowest else (niceness == os.nice(0))


_TAKE_A_BATCH_AND_RETURN = """
from featinv.data.datamodule import InversionDataModule
data = InversionDataModule(image_size=32, batch_size=4, num_workers=2, batches_per_epoch=100)
data.setup("fit")
batches = iter(data.train_dataloader())
next(batches)
print("took a batch", flush=True)
"""


def test_a_script_that_leaves_the_training_stream_unfinished_exits():
    # the persistent workers of a live iterator are ended at exit, however many there are
    done = subprocess.run(
        [sys.executable, "-c", _TAKE_A_BATCH_AND_RETURN],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "took a batch" in done.stdout
    assert "killed by signal" not in done.stderr


def _sigterm_in_a_fresh_fork(seen: list[int], queue: multiprocessing.Queue) -> None:
    """A loader worker between its fork and its start (the run's handlers still in place),
    then after its start: SIGTERM reaches neither the run's handler nor its grace alarm."""
    os.kill(os.getpid(), signal.SIGTERM)
    before_start = (len(seen), signal.alarm(0))
    init_loader_worker(0)
    os.kill(os.getpid(), signal.SIGTERM)
    queue.put((before_start, (len(seen), signal.alarm(0))))


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="SIGALRM and fork are POSIX-only")
def test_a_scheduler_sigterm_to_the_process_group_leaves_loader_workers_running():
    """A scheduler signals the whole group: a worker forked a moment before must not run the
    main process's SIGTERM handler (it would arm the grace alarm and end the worker, which the
    main process then reports as a worker that exited unexpectedly)."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    callback = TerminationCheckpoint(grace_seconds=60)
    try:
        callback.on_fit_start(None, None)
        result, exitcode = _in_a_fork(_sigterm_in_a_fresh_fork, seen)
    finally:
        callback._restore()
        signal.signal(signal.SIGTERM, previous)
    assert exitcode == 0
    assert result == ((0, 0), (0, 0))  # no handler ran, no alarm was armed


_SIGTERM_AS_WORKERS_START = """
import os, signal, time
import torch
from featinv.data.datamodule import InversionDataModule
signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the run's handler: it lives on
data = InversionDataModule(image_size=32, batch_size=4, num_workers=2, batches_per_epoch=100)
data.setup("fit")
loader = data.val_dataloader().pipeline[0]  # the DataLoader: its workers start at iter()
seed = torch.manual_seed
def slow_seed(value):  # PyTorch's worker seeds itself after its signal handlers, before
    time.sleep(1.0)    # worker_init_fn: a second there is a moment a signal cannot miss
    return seed(value)
torch.manual_seed = slow_seed
for _ in range(2):
    batches = iter(loader)
    if os.fork() == 0:  # the scheduler: a process other than the workers' parent
        time.sleep(0.5)
        os.killpg(0, signal.SIGTERM)
        os._exit(0)
    os.wait()
    sum(1 for _ in batches)
print("every worker lived", flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX-only")
def test_a_sigterm_to_the_group_as_loader_workers_start_ends_none_of_them():
    """PyTorch's worker loop installs a SIGTERM handler that kills the worker before its
    ``worker_init_fn`` runs: a scheduler's SIGTERM in that moment used to kill a worker and
    stop the run with "DataLoader worker exited unexpectedly" instead of its checkpoint."""
    done = subprocess.run(
        [sys.executable, "-c", _SIGTERM_AS_WORKERS_START],
        capture_output=True, text=True, timeout=300, start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "every worker lived" in done.stdout
