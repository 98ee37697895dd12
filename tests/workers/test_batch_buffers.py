"""Workers reuse a batch's shared memory only once nothing in the main process can read the batch."""

from __future__ import annotations

import gc
import multiprocessing

import numpy as np
import torch

import kloader
from kloader._workers import buffers as worker_buffers
from kloader._workers.buffers import Returns, WorkerBuffers

from utils import IdDataset, assert_batches_equal, jitter, wait_until_a_worker_is_up


def pipe() -> tuple[object, object]:
    reader, writer = multiprocessing.Pipe(duplex=False)
    return reader, writer


def address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def test_a_returned_buffer_is_reused_and_a_lent_one_never() -> None:
    reader, writer = pipe()
    buffers, returns = WorkerBuffers(0, reader), Returns([writer])
    kept = returns.receive(buffers.allocate((4, 3), np.dtype("float32"))[1])
    dropped = returns.receive(buffers.allocate((4, 3), np.dtype("float32"))[1])
    dropped_at = address(dropped)
    del dropped
    returns.send()
    view, _ = buffers.allocate((4, 3), np.dtype("float32"))
    assert address(view) == dropped_at
    assert (returns.fresh, returns.reused) == (2, 0)
    view, _ = buffers.allocate((4, 3), np.dtype("float32"))
    assert address(view) not in (dropped_at, address(kept))


def test_views_and_tensors_made_from_a_batch_keep_its_buffer() -> None:
    """Anything that can still read the batch holds the buffer: a slice, a torch tensor."""
    reader, writer = pipe()
    buffers, returns = WorkerBuffers(0, reader), Returns([writer])
    batch = returns.receive(buffers.allocate((8, 2), np.dtype("int64"))[1])
    at = address(batch)
    part = batch[2:5]
    tensor = torch.from_numpy(batch)
    del batch
    gc.collect()
    returns.send()
    assert address(buffers.allocate((8, 2), np.dtype("int64"))[0]) != at
    del part
    returns.send()
    assert address(buffers.allocate((8, 2), np.dtype("int64"))[0]) != at
    del tensor
    returns.send()
    assert address(buffers.allocate((8, 2), np.dtype("int64"))[0]) == at


def test_a_buffer_is_reused_only_for_the_same_size() -> None:
    reader, writer = pipe()
    buffers, returns = WorkerBuffers(0, reader), Returns([writer])
    small = returns.receive(buffers.allocate((2, 3), np.dtype("float32"))[1])
    at = address(small)
    del small
    returns.send()
    assert address(buffers.allocate((3, 3), np.dtype("float32"))[0]) != at
    assert address(buffers.allocate((3, 2), np.dtype("float32"))[0]) == at  # same bytes, new shape


def test_a_worker_holds_few_idle_buffers_and_remembers_few_lent_ones() -> None:
    reader, writer = pipe()
    buffers, returns = WorkerBuffers(0, reader), Returns([writer])
    batches = [returns.receive(buffers.allocate((5,), np.dtype("uint8"))[1]) for _ in range(100)]
    assert len(buffers._lent) == worker_buffers._LENT_BUFFERS
    del batches
    returns.send()
    buffers.allocate((5,), np.dtype("uint8"))
    assert len(buffers._free) == worker_buffers._FREE_BUFFERS - 1


def test_strings_are_not_shared_memory() -> None:
    buffers = WorkerBuffers(0, None)
    view, owner = buffers.allocate((3,), np.dtype("<U4"))
    assert owner is view and buffers._lent == {}


def test_batches_kept_by_the_caller_survive_later_epochs_with_workers() -> None:
    """Epoch 1's batches (made by workers), kept whole, sliced or as tensors, are intact after 3 more epochs."""
    reference = kloader.Loader(IdDataset(64), batch_size=4, seed=5, transform=jitter)
    reference.set_epoch(1)
    expected = list(reference)
    with kloader.Loader(IdDataset(64), batch_size=4, seed=5, transform=jitter, num_workers=2) as loader:
        warm_up = iter(loader)
        next(warm_up)  # epoch 0 is made here while the workers start
        wait_until_a_worker_is_up(loader)
        list(warm_up)
        kept = list(loader)
        slices = [batch[0][1:3] for batch in kept]
        tensors = [torch.from_numpy(batch[1]) for batch in kept]
        del kept[::2]  # half of them are dropped: their buffers come back
        for _ in range(3):
            for _batch in loader:
                pass
        reused = loader._pool.buffers_reused
        assert reused >= 10, f"the workers reused {reused} buffers: too few for this test to test anything"
    assert_batches_equal(kept, expected[1::2], what="kept batches")
    for position, (part, tensor) in enumerate(zip(slices, tensors)):
        np.testing.assert_array_equal(part, expected[position][0][1:3])
        np.testing.assert_array_equal(tensor.numpy(), expected[position][1])
