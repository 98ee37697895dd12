"""Worker processes: identical batches for any num_workers, errors that name the sample, clean shutdown."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import psutil
import pytest

import kloader
from kloader._workers import processes as lifecycle

from utils import (
    IdDataset,
    assert_batches_equal,
    batches_with_workers_up,
    id_arrays,
    jitter,
    wait_until_a_worker_is_up,
)


def batches(loader: kloader.Loader, epochs: int) -> list[object]:
    return [batch for _ in range(epochs) for batch in loader]


@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_workers_make_bitwise_identical_batches(num_workers: int) -> None:
    """With a random transform, num_workers 1/2/4 give the same batches as 0, over 3 epochs."""
    expected = batches(kloader.Loader(IdDataset(37), batch_size=5, seed=11, transform=jitter), 3)
    with kloader.Loader(
        IdDataset(37), batch_size=5, seed=11, transform=jitter, num_workers=num_workers
    ) as loader:
        got = batches_with_workers_up(loader, 3)
        assert_batches_equal(got, expected, what=f"num_workers={num_workers}")


def test_array_source_with_workers() -> None:
    """Array sources reach workers (as shared memory) and give the in-process batches."""
    expected = batches(kloader.Loader(id_arrays(30), batch_size=4, seed=2, transform=jitter), 2)
    with kloader.Loader(id_arrays(30), batch_size=4, seed=2, transform=jitter, num_workers=2) as loader:
        assert_batches_equal(batches_with_workers_up(loader, 2), expected)


def test_workers_persist_across_epochs() -> None:
    """The same worker processes serve every epoch."""
    with kloader.Loader(IdDataset(20), batch_size=4, seed=0, num_workers=2) as loader:
        list(loader)
        pids = loader.worker_pids
        assert len(pids) == 2
        list(loader)
        list(loader)
        assert loader.worker_pids == pids


def test_close_and_context_stop_workers() -> None:
    """close() and leaving a with block stop the workers; the loader stays usable."""
    loader = kloader.Loader(IdDataset(20), batch_size=4, seed=0, num_workers=2)
    list(loader)
    processes = [psutil.Process(pid) for pid in loader.worker_pids]
    loader.close()
    assert loader.worker_pids == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    with loader:
        assert len(list(loader)) == 5
    assert loader.worker_pids == []


def test_transform_error_in_a_worker_names_the_sample_and_stops_workers() -> None:
    """A transform raising in a worker: SampleError names the index, carries the
    worker's traceback, and all workers exit."""

    loader = kloader.Loader(
        IdDataset(12), batch_size=4, shuffle=False, transform=fail_on_seven, num_workers=2
    )
    with pytest.raises(kloader.SampleError) as error:
        list(loader)
    message = str(error.value)
    assert "failed on sample 7 (epoch 0) with ZeroDivisionError" in message
    assert "The worker's traceback" in message and "fail_on_seven" in message
    assert loader.worker_pids == []


def fail_on_seven(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
    if sample[1] == 7:
        return 1 / 0
    return sample


def test_lambda_and_closure_transforms_reach_workers_by_value() -> None:
    """A lambda or a nested function goes to the workers by value (cloudpickle) and
    gives the batches of num_workers=0."""
    scale = np.float32(3.0)

    def nested(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
        return sample[0] * scale + rng.normal(size=2).astype(np.float32), sample[1]

    for transform in (lambda s, rng: (s[0] * 2, s[1]), nested):
        expected = batches(kloader.Loader(IdDataset(12), batch_size=4, seed=1, transform=transform), 2)
        with kloader.Loader(
            IdDataset(12), batch_size=4, seed=1, transform=transform, num_workers=2
        ) as loader:
            assert_batches_equal(batches(loader, 2), expected)


class LargeArraySource:
    """A source holding 1 MB of NumPy data, which pickle (protocol 5) hands out as out-of-band buffers."""

    def __init__(self) -> None:
        self.x = np.arange(8 * 1024 * 32, dtype=np.float32).reshape(-1, 32)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.float32]:
        return self.x[index], np.float32(index)


def test_a_source_and_a_transform_holding_large_arrays_go_to_the_workers() -> None:
    """Arrays beyond pickle's 64 KiB in-band limit: the check that the source and the transform
    can be sent refused them before ("object of type 'pickle.PickleBuffer' has no len()")."""
    mean = np.ones(8 * 1024 * 32, dtype=np.float32).reshape(-1, 32)

    def centre(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
        return sample[0] - mean[0], sample[1]

    expected = batches(kloader.Loader(LargeArraySource(), batch_size=4, seed=1, transform=centre), 2)
    with kloader.Loader(LargeArraySource(), batch_size=4, seed=1, transform=centre, num_workers=2) as loader:
        assert_batches_equal(batches(loader, 2), expected)


def test_unpicklable_transform_is_refused_before_starting() -> None:
    """A transform holding a lock fails up front, saying how to fix it."""
    lock = threading.Lock()
    loader = kloader.Loader(IdDataset(4), batch_size=2, transform=lambda s, rng: (lock, s)[1], num_workers=2)
    with pytest.raises(TypeError, match=r"cannot be pickled.*Drop unpicklable members"):
        next(iter(loader))
    assert loader.worker_pids == []


class HoldsALock(IdDataset):
    def __init__(self) -> None:
        super().__init__(4)
        self.lock = threading.Lock()


def test_unpicklable_source_is_refused_before_starting() -> None:
    """A source holding a lock names the source as the problem."""
    loader = kloader.Loader(HoldsALock(), batch_size=2, num_workers=1)
    with pytest.raises(TypeError, match="sends the source to worker processes"):
        next(iter(loader))


def test_random_access_during_iteration_does_not_disturb_workers() -> None:
    """loader[i] is computed in this process and does not change what the workers yield."""
    expected = batches(kloader.Loader(IdDataset(16), batch_size=4, seed=3), 1)
    with kloader.Loader(IdDataset(16), batch_size=4, seed=3, num_workers=2) as loader:
        got = []
        for batch in loader:
            loader[3]
            got.append(batch)
        assert_batches_equal(got, expected)


def test_a_dropped_loader_stops_its_workers_at_once() -> None:
    """A loader freed without close() stops its workers by reference counting,
    immediately (no reference cycle leaves them to a later garbage collection)."""
    loader = kloader.Loader(IdDataset(20), batch_size=4, seed=0, transform=jitter, num_workers=2)
    next(iter(loader))
    processes = [psutil.Process(pid) for pid in loader.worker_pids]
    del loader
    _, alive = psutil.wait_procs(processes, timeout=2)
    assert alive == []


def test_batches_are_made_here_while_workers_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until a worker is up the loader makes every batch asked for in this process
    (no cap, no wait), the same bytes; then the workers go on from the next batch."""

    started = threading.Event()
    real_start = lifecycle._start_in_thread

    def held_start(*args: object) -> None:
        started.wait(timeout=60)
        real_start(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(lifecycle, "_start_in_thread", held_start)
    expected = batches(kloader.Loader(IdDataset(20), batch_size=4, seed=5, transform=pid_jitter), 4)
    with kloader.Loader(IdDataset(20), batch_size=4, seed=5, transform=pid_jitter, num_workers=2) as loader:
        passes = iter(loader)
        got = [next(passes) for _ in range(5)]
        passes = iter(loader)
        got += [next(passes) for _ in range(3)]  # more than num_workers * prefetch
        assert loader._pool is not None and not loader._pool.running
        started.set()
        wait_until_a_worker_is_up(loader)
        got += list(passes)
        assert len(loader.worker_pids) == 2
        got += batches(loader, 2)
        assert_batches_equal([strip_pid(b) for b in got], [strip_pid(b) for b in expected])
    made_by = [b[2][0] for b in got]
    assert set(made_by[:8]) == {os.getpid()}, "made here while the start was held"
    assert set(made_by[-10:]) - {os.getpid()}, "the workers made the last epochs"


def pid_jitter(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
    features, label = jitter(sample, rng)
    return features, label, np.int64(os.getpid())


def strip_pid(batch: object) -> object:
    return batch[:2]  # type: ignore[index]


def test_close_while_workers_start_leaves_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() during the start waits for it and stops the workers it started."""

    started = threading.Event()
    pids: list[int] = []
    real_start = lifecycle._start_in_thread

    def held_start(processes_ref: object, data_loader: object, worker_ends: object) -> None:
        started.wait(timeout=60)
        real_start(processes_ref, data_loader, worker_ends)  # type: ignore[arg-type]
        started_processes = processes_ref()  # type: ignore[operator]
        pids.extend(started_processes.pids if started_processes is not None else [])

    monkeypatch.setattr(lifecycle, "_start_in_thread", held_start)
    loader = kloader.Loader(IdDataset(20), batch_size=4, seed=0, num_workers=2)
    next(iter(loader))
    threading.Timer(0.2, started.set).start()
    loader.close()
    assert len(pids) == 2 and loader.worker_pids == []
    _, alive = psutil.wait_procs([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=5)
    assert alive == []


def test_arrays_without_transform_need_no_workers() -> None:
    """Arrays without a transform are gathered in this process for any num_workers:
    the same batches, and no process is started."""
    expected = batches(kloader.Loader(id_arrays(30), batch_size=4, seed=2), 2)
    with kloader.Loader(id_arrays(30), batch_size=4, seed=2, num_workers=2) as loader:
        assert_batches_equal(batches(loader, 2), expected)
        assert loader.worker_pids == []


class FrozenObjects:
    """Sample i: (pid of the process that made it, objects that process holds frozen)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> np.ndarray:
        return np.array([os.getpid(), gc.get_freeze_count()])


def test_workers_inherit_a_frozen_fork_server() -> None:
    """The fork server freezes what it imported (torch, NumPy, kloader) before it forks
    workers, so their garbage collector never copies those pages; see _freeze_fork_server."""
    with kloader.Loader(FrozenObjects(), batch_size=2, seed=0, num_workers=2) as loader:
        passes = iter(loader)
        first = next(passes)  # made here: the workers are starting
        wait_until_a_worker_is_up(loader)
        pids, counts = np.concatenate([first, *passes]).T
    in_workers = pids != os.getpid()
    assert in_workers.sum() >= 20, "the workers made too few batches to tell"
    # torch alone is over 100 000 objects; this process has frozen none.
    assert (counts[in_workers] > 100_000).all(), counts
    assert (counts[~in_workers] == 0).all(), counts


def test_arrays_travel_to_workers_as_shared_memory_not_bytes() -> None:
    """What the workers get is pickled by value, yet a 10 MB array source pickles to a
    few hundred bytes: torch's reductions send its shared memory as a file descriptor."""
    from kloader._core.sources import as_source
    from kloader._workers.processes import _dumps_by_value
    from kloader._workers.shared_memory import SharedArraySource

    shared = SharedArraySource(as_source(np.zeros((1000, 2500), np.float32)))
    assert len(_dumps_by_value(shared)) < 10_000
