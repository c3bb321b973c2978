"""The data module under several processes: epoch length per rank, enough validation shards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from featinv.data.bundled import bundled_shards
from featinv.data.datamodule import InversionDataModule
from featinv.data.shards import expand_shards


def _data(world_size: int, **options) -> InversionDataModule:
    data = InversionDataModule(num_workers=0, **options)
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
