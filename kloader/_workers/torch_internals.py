"""Every private of torch that kloader relies on (and the ForkingPickler table torch registers with).

Each use is pinned by tests/workers/test_torch_pins.py: after a torch or Python
upgrade, a changed internal fails one named test there instead of a worker
hanging somewhere else. Nothing outside this module touches these names.
Python's own multiprocessing privates are in multiprocessing_internals.py,
which imports no torch.
"""

from __future__ import annotations

from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
import torch.utils.data
from torch.utils.data import _utils as torch_data_utils

# torch re-raises a worker's exception with this phrase in its message
# (torch/utils/data/_utils/worker.py, `ExceptionWrapper(where=...)`).
WORKER_ERROR_PHRASE = "in DataLoader worker process"


# torch's iterator raises a RuntimeError with this text when no result came within
# the DataLoader's `timeout`, and can be asked again afterwards
# (torch/utils/data/dataloader.py, `_get_data`).
TIMEOUT_PHRASE = "DataLoader timed out after"


def timed_out(error: BaseException) -> bool:
    """True when `error` is torch's "no result within `timeout`" (the iterator stays usable)."""
    return isinstance(error, RuntimeError) and str(error).startswith(TIMEOUT_PHRASE)


def raised_in_a_worker(error: BaseException) -> bool:
    """True when torch re-raised `error` from a worker's exception."""
    return WORKER_ERROR_PHRASE in str(error)


class QuietDataLoader(torch.utils.data.DataLoader):  # type: ignore[type-arg]
    """torch's DataLoader without its advice against more workers than cores.

    The advice names a DataLoader that kloader users never created; the choice
    of `num_workers` is theirs.
    """

    def check_worker_number_rationality(self) -> None:
        pass


def worker_processes(iterator: Any) -> list[Any]:
    """The `multiprocessing.Process` objects of a multi-process DataLoader iterator."""
    return list(iterator._workers)


def shutdown_workers(iterator: Any) -> None:
    """Stops an iterator's workers now (joins, terminates the stubborn)."""
    iterator._shutdown_workers()


def queues_of(iterator: Any) -> list[Any]:
    """The multiprocessing queues of a multi-process DataLoader iterator: one per worker
    for the indices it sends, and the one results come back on."""
    return [*iterator._index_queues, iterator._worker_result_queue]


def stop_death_reports_in_main_thread(iterator: Any) -> None:
    """Takes the iterator's workers out of torch's SIGCHLD handler.

    That handler raises a worker's death in the main thread wherever it happens
    to be (inside a Keras train step, say); kloader reports deaths where it
    waits for batches instead.
    """
    if iterator._worker_pids_set:
        torch_data_utils.signal_handling._remove_worker_pids(id(iterator))  # type: ignore[attr-defined]
        iterator._worker_pids_set = False


def forking_reducers() -> dict[type, Any]:
    """The reductions registered with multiprocessing's ForkingPickler (torch's among
    them: a tensor in shared memory pickles as a file descriptor, not as bytes)."""
    return ForkingPickler._extra_reducers  # type: ignore[attr-defined,no-any-return]


def new_shared_storage(nbytes: int) -> torch.UntypedStorage:
    """An uninitialised storage of `nbytes` allocated directly in shared memory."""
    return torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call,no-any-return]
