"""Every private of Python's multiprocessing that kloader relies on, for starting workers.

Kept apart from torch_internals.py: it imports no torch, so a loader can start
its fork server before this process imports torch (fork_server.py). Each use is
pinned by tests/workers/test_multiprocessing_pins.py. Nothing outside this
module touches these names.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.context
import os
from multiprocessing import forkserver, popen_forkserver, spawn, util
from multiprocessing.context import set_spawning_popen
from typing import Any

# The keys of multiprocessing's preparation data that make a child import the
# parent's main module (multiprocessing/spawn.py, `prepare`).
MAIN_MODULE_KEYS = ("init_main_from_path", "init_main_from_name")


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


def wait_for_feeder_thread(queue: Any, timeout: float) -> None:
    """Waits, at most `timeout` seconds, for a closed `multiprocessing.Queue`'s feeder thread
    to end. Until it does it holds the queue's lock, whose named semaphore (a `sem.mp-*`
    file in /dev/shm) is unlinked only when the queue is freed."""
    thread = getattr(queue, "_thread", None)
    if thread is not None:
        thread.join(timeout)
