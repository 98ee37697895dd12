"""Worker processes that make the batches a loader asks for.

`WorkerPool` joins two parts: a `Plan` (plan.py: which tasks go out, which
are in flight, which came back early; pure bookkeeping) and `WorkerProcesses`
(processes.py: start, readiness, results, death, stop). The pool holds the one
lock over both, and decides where each batch is made.

While the workers start, the main process makes the batches itself (a batch
is a pure function of its task, so they are the same bytes), for as long as
no worker is up: the loop never waits for a start (unless a `timeout` is set,
which watches the workers only: then they make every batch). As soon as one worker is
up (or every worker has exited, which is then reported at once), the workers
take over from the batch after the one asked for; tasks they were handed
before, and that the main process has made since, they skip.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from kloader._core.batches import BatchMaker
from kloader._workers import fork_server, multiprocessing_internals, shared_memory
from kloader._workers.plan import Key, Plan, Task
from kloader._workers.processes import WorkerProcesses, check_picklable

__all__ = [
    "Task",
    "WorkerPool",
    "check_picklable",
]

_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_NOT_MADE: Any = object()


def _always() -> bool:
    return True


@atexit.register
def _stop_everything_at_exit() -> None:
    # A thread still starting workers when the interpreter tears down aborts the
    # process (C++ std::terminate inside torch): stop every pool first, and
    # start none after (this handler runs before fork_server's own).
    fork_server.note_interpreter_exit()
    for pool in list(_pools):
        pool.close()


class _Sampler:
    # Weak, so that pool -> torch iterator -> sampler -> pool is no cycle: the
    # pool must be freed (and its workers stopped) by reference counting, not
    # by a garbage-collection pass that may already have closed the queues the
    # shutdown needs.
    def __init__(self, pool: WorkerPool):
        self._pool = weakref.ref(pool)

    def __iter__(self) -> Iterator[Task]:
        while True:
            pool = self._pool()
            if pool is None:
                return
            task = pool._next_task_to_send()
            del pool  # hold no reference while suspended
            yield task


class WorkerPool:
    """`num_workers` persistent processes making the batches a loader asks for.

    Args:
        maker: what each worker runs.
        plan_from: `plan_from(task)` yields the tasks expected from `task` on, forever.
        num_workers: how many processes.
        start_method: "forkserver", "spawn" or "fork".
        prefetch: batches in flight per worker.
        timeout: seconds a worker may hold one batch before a WorkerError;
            None warns once after a generous delay instead.
    """

    def __init__(
        self,
        maker: BatchMaker,
        plan_from: Callable[[Task], Iterator[Task]],
        *,
        num_workers: int,
        start_method: str,
        prefetch: int,
        timeout: float | None = None,
    ):
        self._maker = maker
        self._timeout = timeout
        # What the workers get: the same maker, arrays in shared memory (made on first start).
        self._worker_maker: BatchMaker | None = None
        self.num_workers = num_workers
        self.start_method = start_method
        self._prefetch = prefetch
        self._lock = threading.RLock()
        self._plan = Plan(plan_from, keep=num_workers * prefetch)
        self._processes: WorkerProcesses | None = None
        # False while the workers start and the main process makes the batches.
        self._workers_deliver = False
        self._buffers_reused_before = 0  # by processes stopped since

    @property
    def buffers_reused(self) -> int:
        """How many batch buffers the workers have filled again (all starts together)."""
        processes = self._processes
        return self._buffers_reused_before + (processes.buffers_reused if processes is not None else 0)

    @property
    def running(self) -> bool:
        """True once the worker processes are started."""
        processes = self._processes
        return processes is not None and processes.up

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (empty when none run); waits for a start in progress."""
        processes = self._processes
        if processes is not None:
            processes.wait_started()
        with self._lock:  # and for a close in progress to finish
            return self._processes.pids if self._processes is not None else []

    def get(self, task: Task, still_wanted: Callable[[], bool] = _always) -> Any:
        """The batch for `task`, as NumPy arrays; starts the workers if needed.

        Any failure stops all workers before it is raised. A worker that died
        is reported as a WorkerError naming it, whatever symptom showed first.

        `still_wanted()` says whether the asker still wants batches (a pass: that
        it is not closed). It is asked under the lock that `close` takes, before
        any start: once it says no, no worker starts for `task`, and the batch is
        made in this process. So a framework thread that asked for a batch just
        as its Keras call ended (which closes the call's passes, then stops the
        workers) does not start the workers again after the call.
        """
        made_here = self._make_while_starting(task, still_wanted)
        if made_here is not _NOT_MADE:
            return made_here
        while True:
            processes = self._processes
            error = processes.wait_started() if processes is not None else None
            with self._lock:
                if error is not None and self._processes is processes:
                    self._close_locked()
                    raise error
                if self._processes is not None and self._processes.up:
                    return self._get_from_workers(task)
                if self._processes is None:  # closed by another thread meanwhile
                    if not still_wanted():
                        break
                    self._start()
                    self._workers_make_from(task)
        return self._maker.make(task.seed, task.epoch, task.indices)

    def _make_while_starting(self, task: Task, still_wanted: Callable[[], bool]) -> Any:
        """The batch made in this process while no worker is up yet (or none may
        start), else _NOT_MADE.

        On the call that finds a worker up, the workers are handed the tasks
        after this one first, and this one is still made here meanwhile.
        """
        with self._lock:
            if self._processes is None and still_wanted():
                self._start()
            processes = self._processes
            if processes is not None:
                if self._workers_deliver:
                    return _NOT_MADE
                if self._timeout is not None:
                    # A timeout watches the workers: with one, they make every batch, the
                    # first ones too, so that a batch that never ends is reported wherever
                    # it is (made here, it would block the loop with nothing to stop it).
                    self._workers_make_from(task)
                    return _NOT_MADE
                taking_over = processes.some_worker_started()
                was_coming = self._plan.is_coming(task.key)
                if taking_over:
                    self._workers_deliver = True
                    if was_coming:
                        return _NOT_MADE
                self._plan.continue_after(task)
                if was_coming:
                    processes.send(skip=[task.key])
        if processes is None:  # closed, and the asker no longer wants batches: start nothing
            return self._maker.make(task.seed, task.epoch, task.indices)
        if taking_over and not self._hand_over(processes):
            return _NOT_MADE
        try:
            return self._maker.make(task.seed, task.epoch, task.indices)
        except Exception:
            # Let fresh workers make it: the error then reads the same (with
            # the worker's traceback) wherever it happened.
            self.close()
            with self._lock:
                if not still_wanted():
                    raise
                self._start()
                self._workers_make_from(task)
            return _NOT_MADE

    def _workers_make_from(self, task: Task) -> None:
        """From `task` on, the workers make every batch (called under self._lock)."""
        self._workers_deliver = True
        self._plan.continue_from(task)

    def _hand_over(self, processes: WorkerProcesses) -> bool:
        """Collects the results of the tasks made here meanwhile (the workers skip
        them: milliseconds), which sends the workers the tasks that come next.
        False when the start failed (the caller's wait reports it)."""
        if processes.wait_started() is not None:
            return False
        with self._lock:
            if self._processes is not processes or not processes.up:
                return False
            try:
                while self._plan.unwanted:
                    key, batch = self._next_result(processes)
                    self._plan.receive(key, batch, wanted=None)
            except BaseException:
                self._close_locked()
                raise
        return True

    def _get_from_workers(self, task: Task) -> Any:
        # Under self._lock, with the workers running.
        processes = self._processes
        assert processes is not None
        found, batch = self._plan.take(task.key)
        if found:
            return batch
        if self._plan.is_unwanted(task.key):
            # Asked again while its skipped copy is still out: made here.
            return self._maker.make(task.seed, task.epoch, task.indices)
        if not self._plan.is_coming(task.key):
            self._plan.continue_from(task)
        try:
            while True:
                key, batch = self._next_result(processes)
                if self._plan.receive(key, batch, wanted=task.key):
                    if batch is None:
                        # A worker skipped it (told to, for an earlier copy made here).
                        return self._maker.make(task.seed, task.epoch, task.indices)
                    return batch
        except BaseException:
            self._close_locked()
            raise

    def _next_result(self, processes: WorkerProcesses) -> tuple[Key, Any]:
        """The next result from the workers; what their samples drew from global random
        state is warned about here, in the main process."""
        key, batch = processes.next()
        notices, processes.notices = processes.notices, []
        self._maker.warn(notices)
        return key, batch

    def _next_task_to_send(self) -> Task:
        # Called by torch, inside next() on its iterator or while the iterator
        # is being created in the starting thread.
        with self._lock:
            if self._processes is not None:
                self._processes.send()
            return self._plan.next_to_send()

    def _start(self) -> None:
        # Under self._lock: builds the DataLoader here (errors surface in the
        # caller) and starts the processes in a thread.
        if fork_server.interpreter_exiting():
            raise RuntimeError("kloader does not start worker processes while the interpreter is exiting.")
        if multiprocessing_internals.importing_main_module():
            # This process is itself a 'spawn' worker importing the main module:
            # the script's training code runs at import time. Fail here, loudly,
            # rather than train in every worker.
            raise RuntimeError(
                "A kloader worker process is importing your main module, and the module starts "
                "workers at import time. Workers started with 'spawn' import the main module: put "
                "the training code under an `if __name__ == '__main__':` guard, or use the default "
                "start method, 'forkserver', whose workers never import it."
            )
        _pools.add(self)
        if self._worker_maker is None:
            self._worker_maker = shared_memory.for_workers(self._maker)
        if self.start_method == "forkserver":
            fork_server.set_preload(self._maker)
        self._workers_deliver = False
        self._processes = WorkerProcesses(
            self._worker_maker,
            _Sampler(self),
            num_workers=self.num_workers,
            start_method=self.start_method,
            prefetch=self._prefetch,
            timeout=self._timeout,
        )

    def close(self) -> None:
        """Stops the workers and forgets everything in flight. Safe to call twice.

        A start in progress is waited for first, so no process outlives the call.
        Must not be called holding a lock that the planning of tasks takes.
        """
        processes = self._processes
        if processes is not None:
            processes.wait_started()
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        processes, self._processes = self._processes, None
        self._plan.clear()
        self._workers_deliver = False
        if processes is not None:
            processes.close()
            self._buffers_reused_before += processes.buffers_reused
