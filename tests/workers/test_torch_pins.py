"""Pins: the torch internals kloader relies on, one test each.

Every name kloader/_workers/torch_internals.py touches is checked here against
the installed torch and Python (multiprocessing's own: test_multiprocessing_pins.py). If one of these fails after an upgrade, fix
torch_internals.py before anything else: the symptom elsewhere would be a
worker that hangs, or an error without its advice.
"""

from __future__ import annotations

import multiprocessing.queues
import os
import signal
import time
import warnings

import psutil
import pytest
import torch.utils.data

from kloader._workers import torch_internals

from utils import IdDataset


def data_loader(
    num_workers: int, start_method: str = "forkserver", **options: object
) -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    return torch.utils.data.DataLoader(
        IdDataset(8),
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context=start_method,
        **options,  # type: ignore[arg-type]
    )


def test_a_worker_exception_is_reraised_with_the_phrase_kloader_matches() -> None:
    """torch re-raises a worker's exception with "in DataLoader worker process" in it."""
    loader = data_loader(1, sampler=[100])  # IdDataset raises IndexError for 100
    with pytest.raises(IndexError) as error:
        next(iter(loader))
    assert torch_internals.raised_in_a_worker(error.value), str(error.value)
    assert not torch_internals.raised_in_a_worker(IndexError("100"))


def test_quiet_data_loader_overrides_the_worker_number_advice() -> None:
    """DataLoader.check_worker_number_rationality warns about more workers than cores;
    QuietDataLoader's override of it does not."""
    too_many = len(os.sched_getaffinity(0)) + 1
    with pytest.warns(UserWarning, match="worker processes in total"):
        torch.utils.data.DataLoader(IdDataset(8), num_workers=too_many)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_internals.QuietDataLoader(IdDataset(8), num_workers=too_many)


def test_iterator_exposes_its_worker_processes_and_shuts_them_down() -> None:
    """iterator._workers are the live processes; iterator._shutdown_workers() ends them."""
    iterator = iter(data_loader(2))
    processes = torch_internals.worker_processes(iterator)
    assert len(processes) == 2
    assert all(p.pid and p.exitcode is None and p.sentinel for p in processes)
    torch_internals.shutdown_workers(iterator)
    assert all(p.exitcode is not None for p in processes)


def test_iterator_keeps_one_index_queue_per_worker_and_a_result_queue() -> None:
    """queues_of(iterator): the multiprocessing queues kloader waits on at close."""
    iterator = iter(data_loader(2))
    queues = torch_internals.queues_of(iterator)
    assert len(queues) == 3
    assert all(isinstance(queue, multiprocessing.queues.Queue) for queue in queues)
    torch_internals.shutdown_workers(iterator)


@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_removing_worker_pids_keeps_a_death_out_of_the_main_thread() -> None:
    """torch's SIGCHLD handler raises a worker's death in the main thread, wherever it is
    (for workers that are children of this process: start method fork); after
    `_remove_worker_pids` (via `_worker_pids_set`) it does not."""
    watched = iter(data_loader(1, "fork"))
    os.kill(torch_internals.worker_processes(watched)[0].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        time.sleep(5)  # interrupted by the handler
    torch_internals.shutdown_workers(watched)

    quiet = iter(data_loader(1, "fork"))
    assert quiet._worker_pids_set
    torch_internals.stop_death_reports_in_main_thread(quiet)
    assert not quiet._worker_pids_set
    worker = torch_internals.worker_processes(quiet)[0]
    os.kill(worker.pid, signal.SIGKILL)
    psutil.Process(worker.pid).wait(timeout=5)
    time.sleep(0.5)  # no error arrives
    torch_internals.shutdown_workers(quiet)


def test_new_shared_storage_is_shared_memory_of_the_size_asked() -> None:
    """UntypedStorage._new_shared(n) allocates n bytes in shared memory."""
    storage = torch_internals.new_shared_storage(1000)
    assert storage.is_shared() and storage.nbytes() == 1000


def test_torch_registers_its_tensor_reductions_with_forking_pickler() -> None:
    """ForkingPickler._extra_reducers holds torch's reductions for tensors and storages,
    which kloader's cloudpickle pickler adds so shared arrays travel as file descriptors."""
    reducers = torch_internals.forking_reducers()
    assert torch.Tensor in reducers and torch.UntypedStorage in reducers


class SlowFirst:
    """Sample 0 takes a second."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        if index == 0:
            time.sleep(1)
        return index


def test_a_timed_out_iterator_can_be_asked_again() -> None:
    """With DataLoader(timeout=t), no result within t raises "DataLoader timed out after"
    and leaves the iterator usable: asked again, it yields the result in order."""
    loader = torch.utils.data.DataLoader(
        SlowFirst(), batch_size=None, num_workers=1, multiprocessing_context="forkserver", timeout=0.2
    )
    iterator = iter(loader)
    with pytest.raises(RuntimeError) as error:
        next(iterator)
    assert torch_internals.timed_out(error.value), str(error.value)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert [int(next(iterator)), int(next(iterator))] == [0, 1]
            break
        except RuntimeError as again:
            assert torch_internals.timed_out(again) and time.monotonic() < deadline
    torch_internals.shutdown_workers(iterator)
