"""Every private of torch and of Python's multiprocessing that kloader relies on.

Each use is pinned by tests/workers/test_torch_pins.py: after a torch or Python
upgrade, a changed internal fails one named test there instead of a worker
hanging somewhere else. Nothing outside this module touches these names.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.context
import os
from multiprocessing import forkserver, popen_forkserver, spawn, util
from multiprocessing.context import set_spawning_popen
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
import torch.utils.data
from torch.utils.data import _utils as torch_data_utils

# torch re-raises a worker's exception with this phrase in its message
# (torch/utils/data/_utils/worker.py, `ExceptionWrapper(where=...)`).
WORKER_ERROR_PHRASE = "in DataLoader worker process"

# The keys of multiprocessing's preparation data that make a child import the
# parent's main module (multiprocessing/spawn.py, `prepare`).
MAIN_MODULE_KEYS = ("init_main_from_path", "init_main_from_name")


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


def importing_main_module() -> bool:
    """True in a child process that is importing the parent's main module (spawn)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


class _ForkServerPopenWithoutMain(popen_forkserver.Popen):
    """Launches a fork-server child without making it import the main module.

    Python's own `_launch`, less the main module in the preparation data: the
    child of a script would otherwise run the script again (as `__mp_main__`)
    before it can unpickle anything. kloader sends what the workers need by
    value (cloudpickle), so they never need the main module.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        for key in MAIN_MODULE_KEYS:
            prep_data.pop(key, None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            multiprocessing.reduction.dump(prep_data, buf)
            multiprocessing.reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)

        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        # Keep a duplicate of the data pipe's write end as a sentinel of the
        # parent process used by the child process.
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))  # type: ignore[attr-defined]
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ForkServerProcessWithoutMain(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _ForkServerPopenWithoutMain(process_obj)


class ForkServerContextWithoutMain(multiprocessing.context.ForkServerContext):
    """The forkserver start method, with children that do not import the main module."""

    Process = _ForkServerProcessWithoutMain


def context_for(start_method: str) -> multiprocessing.context.BaseContext:
    """The multiprocessing context kloader's workers start under."""
    if start_method == "forkserver":
        return ForkServerContextWithoutMain()
    return multiprocessing.get_context(start_method)
