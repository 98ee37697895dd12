"""Worker processes that make batches, on torch.utils.data's multiprocessing machinery.

One `torch.utils.data.DataLoader` iteration is kept open for the life of the
pool, over an endless sampler that hands out *tasks* (seed, epoch, batch,
sample indices). torch supplies the processes, queues, ordering, failure
detection, error propagation with the worker's traceback, and shared-memory
transfer of tensors. Each worker runs `BatchMaker.make` and writes the batch
straight into shared memory.

The sampler follows a *plan*: the tasks the loader expects next, running on
past the end of the epoch into the next one, so workers stay busy across the
epoch boundary. When a pass asks for a task the plan did not foresee (a resume,
`set_epoch`, Keras discarding a pass), the plan restarts at that task; results
already in flight are kept for a while in case they are asked for later.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.utils.data

from kloader._core.batches import BatchMaker
from kloader._core.errors import WorkerError
from kloader._workers import shared_memory
from kloader._workers.buffers import Returns, WorkerBuffers

START_METHODS = ("fork", "forkserver", "spawn")

# Set at exit: a framework thread (tf.data's, say) still pulling batches while
# Python shuts down must not start a fresh set of workers.
_interpreter_exiting = False
_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _stop_everything_at_exit() -> None:
    # A thread still starting workers when the interpreter tears down aborts the
    # process (C++ std::terminate inside torch): stop every pool first.
    global _interpreter_exiting
    _interpreter_exiting = True
    for pool in list(_pools):
        pool.close()


class Task(NamedTuple):
    """One batch to make: the sample `indices` of batch `batch` of `epoch` under `seed`."""

    seed: int
    epoch: int
    batch: int
    indices: np.ndarray

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.seed, self.epoch, self.batch)


def default_start_method() -> str:
    """`forkserver` where it exists: safe after CUDA, JAX or TensorFlow have started threads."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)


def check_picklable(obj: Any, what: str) -> None:
    """Raises a TypeError that says how to fix it when `obj` cannot go to a worker."""
    try:
        pickle.Pickler(_Null(), protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    except Exception as exc:
        raise TypeError(
            f"num_workers > 0 sends the {what} to worker processes by pickling, but it cannot "
            f"be pickled: {type(exc).__name__}: {exc}. Define it at module level (not as a "
            "lambda, a nested function or a class inside a function), drop unpicklable members "
            "such as open files or locks, or use num_workers=0."
        ) from exc


class _WorkerDataset:
    """What each worker process holds: the batch maker. Indices are tasks.

    `parent_alive` is the read end of a pipe whose write end only the main
    process holds: it reaches end-of-file when the main process dies, however
    it dies. torch's own watchdog watches the worker's parent process, which
    under forkserver is the fork server, not the main process, and the fork
    server in turn waits for its children: killed with SIGKILL, the main
    process would leave both behind for good.

    `returns` holds, by worker id, the read ends of the pipes on which the main
    process sends back the batch buffers it has let go of (`_batch_buffers`).
    """

    def __init__(self, maker: BatchMaker, parent_alive: Any, returns: list[Any]):
        self.maker = maker
        self.parent_alive = parent_alive
        self.returns = returns
        self._buffers: WorkerBuffers | None = None

    def __getitem__(self, task: Task) -> tuple[tuple[int, int, int], Any, list[str]]:
        if self._buffers is None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
            self._buffers = WorkerBuffers(worker, self.returns[worker])
        # Global-random notices travel with the batch, to be warned in the main process.
        self.maker.collect_notices = True
        batch = self.maker.make(task.seed, task.epoch, task.indices, self._buffers.allocate)
        return task.key, batch, self.maker.take_notices()


def _watch_parent(worker_id: int) -> None:
    """worker_init_fn: exit as soon as the main process is gone."""
    info = torch.utils.data.get_worker_info()
    parent_alive = getattr(info.dataset, "parent_alive", None) if info is not None else None
    if parent_alive is not None:
        threading.Thread(target=_exit_on_end_of_file, args=(parent_alive,), daemon=True).start()


def _exit_on_end_of_file(connection: Any) -> None:
    multiprocessing.connection.wait([connection])
    os._exit(0)


def _drop_torch_frames(error: BaseException) -> None:
    """Forgets where in torch's iterator an error passed, so that the error does not
    keep the stopped iterator (its queues and semaphores) alive for as long as the
    user holds the error. What matters is kept: the message, which for an error in
    a worker carries the worker's traceback, and the chain of causes."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__


def _raised_in_a_worker(error: BaseException) -> bool:
    # torch re-raises a worker's exception with this phrase in the message.
    return "in DataLoader worker process" in str(error)


def _keep_as_is(result: Any) -> Any:
    return result


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


class _DataLoader(torch.utils.data.DataLoader):  # type: ignore[type-arg]
    def check_worker_number_rationality(self) -> None:
        # torch's advice against more workers than cores names its DataLoader,
        # which kloader users never created; the choice is theirs.
        pass


def _start_in_thread(pool_ref: weakref.ref[WorkerPool], data_loader: Any, worker_ends: list[Any]) -> None:
    """Starts the worker processes (slow: about a second for a fresh fork server)."""
    iterator, error = None, None
    try:
        iterator = iter(data_loader)
    except BaseException as exc:
        error = exc
    finally:
        for end in worker_ends:
            end.close()  # the workers have their own copies now
    pool = pool_ref()
    if pool is not None:
        pool._started(iterator, error)
    elif iterator is not None:
        iterator._shutdown_workers()


class WorkerPool:
    """`num_workers` persistent processes making the batches a loader asks for.

    The processes start in a background thread; until they are up, `get`
    makes the batches it is asked for in this process (a batch is a pure
    function of its task, so they are the same bytes), and the workers go on
    after the last of them.

    Args:
        maker: what each worker runs.
        plan_from: `plan_from(task)` yields the tasks expected from `task` on, forever.
        num_workers: how many processes.
        start_method: "forkserver", "spawn" or "fork".
        prefetch: batches in flight per worker.
    """

    def __init__(
        self,
        maker: BatchMaker,
        plan_from: Callable[[Task], Iterator[Task]],
        *,
        num_workers: int,
        start_method: str,
        prefetch: int,
    ):
        self._maker = maker
        # What the workers get: the same maker, arrays in shared memory (made on first start).
        self._worker_maker: BatchMaker | None = None
        self._plan_from = plan_from
        self.num_workers = num_workers
        self.start_method = start_method
        self._prefetch = prefetch
        self._lock = threading.RLock()
        self._iterator: Any = None
        self._starter: threading.Thread | None = None
        self._made_while_starting = 0
        self._start_error: BaseException | None = None
        self._plan: Iterator[Task] = iter(())
        self._in_flight: deque[tuple[int, int, int]] = deque()
        self._ready: OrderedDict[tuple[int, int, int], Any] = OrderedDict()
        self._batches_received = 0
        self._alive_writer: Any = None
        self._returns = Returns([])

    @property
    def running(self) -> bool:
        return self._iterator is not None

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (empty when none run); waits for a start in progress."""
        self._wait_for_start(raise_error=False)
        with self._lock:  # and for a close in progress to finish
            if self._iterator is None:
                return []
            return [w.pid for w in self._iterator._workers if w.pid is not None]

    def get(self, task: Task) -> Any:
        """The batch for `task`, as NumPy arrays; starts the workers if needed.

        Any failure stops all workers before it is raised. A worker that died
        is reported as a WorkerError naming it, whatever symptom showed first.
        """
        made_here = self._make_while_starting(task)
        if made_here is not None:
            return made_here
        while True:
            self._wait_for_start(raise_error=True)
            with self._lock:
                if self._iterator is not None:
                    return self._get_from_workers(task)
                if self._starter is None:  # closed by another thread meanwhile
                    self._start()
                    self._plan = self._plan_from(task)

    def _make_while_starting(self, task: Task) -> Any:
        """The batch made in this process if the workers are not up yet, else None.

        At most `num_workers * prefetch` batches per start: enough to cover the
        start-up, and few enough that workers failing to start (a script with no
        `__main__` guard, say) are reported at once instead of being masked by a
        main process that quietly does all the work.
        """
        with self._lock:
            if self._iterator is not None or self._start_error is not None:
                return None
            if self._starter is None:
                self._start()
                self._made_while_starting = 0
            if self._made_while_starting >= self.num_workers * self._prefetch:
                return None
            self._made_while_starting += 1
            # The workers go on after this batch (whichever comes up first).
            self._plan = self._plan_from(task)
            next(self._plan)
        try:
            return self._maker.make(task.seed, task.epoch, task.indices)
        except Exception:
            # Let fresh workers make it, first: the error then reads the same
            # (with the worker's traceback) however far the start had got.
            self.close()
            with self._lock:
                self._start()
                self._plan = self._plan_from(task)
            return None

    def _get_from_workers(self, task: Task) -> Any:
        # Under self._lock, with the workers running.
        if task.key in self._ready:
            return self._ready.pop(task.key)
        if task.key not in self._in_flight:
            self._plan = self._plan_from(task)
        try:
            while True:
                key, batch, notices = next(self._iterator)
                batch = self._returns.receive(batch)
                self._maker.warn(notices)
                self._batches_received += 1
                self._in_flight.remove(key)
                if key == task.key:
                    return batch
                self._keep(key, batch)
        except BaseException as error:
            dead = self._dead_workers(wait=not _raised_in_a_worker(error))
            message = self._death_message(dead) if dead else ""
            _drop_torch_frames(error)
            self.close()
            if dead:
                raise WorkerError(message) from error
            raise error.with_traceback(None) from error.__cause__

    def _keep(self, key: tuple[int, int, int], batch: Any) -> None:
        self._ready[key] = batch
        while len(self._ready) > self.num_workers * self._prefetch:
            self._ready.popitem(last=False)

    def _next_task_to_send(self) -> Task:
        # Called by torch, inside next(self._iterator) or while the iterator
        # is being created in the starting thread.
        with self._lock:
            self._returns.send()
            while True:
                task = next(self._plan)
                if task.key not in self._in_flight and task.key not in self._ready:
                    self._in_flight.append(task.key)
                    return task

    def _start(self) -> None:
        # Under self._lock: builds the DataLoader here (errors surface in the
        # caller) and creates its iterator, which starts the processes, in a thread.
        if _interpreter_exiting:
            raise RuntimeError("kloader does not start worker processes while the interpreter is exiting.")
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # This process is itself a worker importing the main module: the
            # script's training code runs at import time. Fail here, loudly,
            # rather than train in every worker.
            raise RuntimeError(
                "A kloader worker process is importing your main module, and the module starts "
                "workers at import time. Workers started with 'forkserver' or 'spawn' import the "
                "main module: put the training code under an `if __name__ == '__main__':` guard."
            )
        _pools.add(self)
        if self._worker_maker is None:
            self._worker_maker = shared_memory.for_workers(self._maker)
        context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            # Workers fork from a server that has already imported torch,
            # kloader and the modules defining the source and transform, so
            # starting them costs milliseconds, not seconds. The user's
            # __main__ is preloaded as Python does by default, so that sources
            # and transforms defined in a script can be unpickled. The last
            # module freezes what the server imported, so that the workers
            # share those pages instead of copying them. (This only takes
            # effect when the server starts, for the first pool.)
            context.set_forkserver_preload(
                [
                    "__main__",
                    "kloader._workers.pool",
                    *self._maker.modules(),
                    "kloader._workers.freeze_fork_server",
                ]
            )
        parent_alive = None
        if self.start_method != "fork":
            # Under fork, workers are children of this process, torch's watchdog
            # sees its death, and they would inherit the write end anyway.
            parent_alive, self._alive_writer = context.Pipe(duplex=False)
        return_readers, return_writers = zip(*(context.Pipe(duplex=False) for _ in range(self.num_workers)))
        self._returns = Returns(list(return_writers))
        # Closed here once the workers have their copies.
        worker_ends = [*return_readers, *([parent_alive] if parent_alive is not None else [])]
        try:
            data_loader = _DataLoader(
                _WorkerDataset(self._worker_maker, parent_alive, list(return_readers)),  # type: ignore[arg-type]
                batch_size=None,
                sampler=_Sampler(self),
                num_workers=self.num_workers,
                collate_fn=_keep_as_is,
                multiprocessing_context=context,
                prefetch_factor=self._prefetch,
                worker_init_fn=_watch_parent,
                # torch draws its workers' base seed from this generator: a private one
                # leaves the user's global torch random state untouched (and keeps the
                # global-random guard from seeing the draw, made in the start thread).
                generator=torch.Generator(),
            )
            self._starter = threading.Thread(
                target=_start_in_thread,
                args=(weakref.ref(self), data_loader, worker_ends),
                name="kloader-start-workers",
                daemon=True,
            )
            self._starter.start()
        except BaseException:
            self._starter = None
            for end in worker_ends:
                end.close()
            self._close_pipes()
            raise

    def _started(self, iterator: Any, error: BaseException | None) -> None:
        # Called by the starting thread when the processes are up (or failed to start).
        with self._lock:
            if error is not None:
                self._start_error = error
                self._in_flight.clear()
                self._close_pipes()
                return
            self._iterator = iterator
            self._report_deaths_where_we_wait()

    def _wait_for_start(self, *, raise_error: bool) -> None:
        """Waits (holding no lock) for a start in progress; re-raises its error if asked."""
        starter = self._starter
        if starter is not None and starter is not threading.current_thread():
            starter.join()
        with self._lock:
            error, self._start_error = self._start_error, None
            if error is not None:
                self._starter = None
        if error is not None and raise_error:
            self.close()
            raise error

    def _report_deaths_where_we_wait(self) -> None:
        # torch's SIGCHLD handler raises a worker's death in the main thread
        # wherever it happens to be (inside a Keras train step, say). Leave the
        # pool out of it: `get` notices a dead worker within 5 s (torch's status
        # check interval) and raises a WorkerError that says what to do.
        from torch.utils.data import _utils

        if self._iterator._worker_pids_set:
            _utils.signal_handling._remove_worker_pids(id(self._iterator))  # type: ignore[attr-defined]
            self._iterator._worker_pids_set = False

    def _dead_workers(self, wait: bool) -> list[str]:
        workers = self._iterator._workers if self._iterator is not None else []
        if wait:
            # A worker's death can surface first as a broken hand-over of its
            # last batch; its exit status follows within milliseconds.
            multiprocessing.connection.wait([w.sentinel for w in workers], timeout=1.0)
        dead = []
        for worker in workers:
            code = worker.exitcode
            if code is not None and code < 0:
                dead.append(f"pid {worker.pid} killed by {signal.Signals(-code).name}")
            elif code:
                dead.append(f"pid {worker.pid} exited with code {code}")
        return dead

    def _death_message(self, dead: list[str]) -> str:
        message = f"A kloader worker process died ({'; '.join(dead)}). All workers were shut down; iterating again starts new ones. "
        if self._batches_received == 0:
            return message + (
                "No worker ever delivered a batch, so it most likely failed to start: its traceback is "
                "printed above. Workers started with 'forkserver' or 'spawn' import the main module "
                "and unpickle the source and transform: a script needs an "
                "`if __name__ == '__main__':` guard around its training code, and objects defined "
                "in an interactive session or `python -c` cannot be found by workers (define them "
                "in a module)."
            )
        return message + (
            "A worker killed by SIGKILL was most often stopped by the out-of-memory killer: use "
            "fewer workers, a smaller batch_size, or less prefetch."
        )

    def close(self) -> None:
        """Stops the workers and forgets everything in flight. Safe to call twice.

        A start in progress is waited for first, so no process outlives the call.
        Must not be called holding a lock that the planning of tasks takes.
        """
        self._wait_for_start(raise_error=False)
        with self._lock:
            self._starter = None
            iterator, self._iterator = self._iterator, None
            self._in_flight.clear()
            self._ready.clear()
            self._plan = iter(())
            self._batches_received = 0
            if iterator is not None:
                iterator._shutdown_workers()
                # Its queues' named semaphores are unlinked when it is freed: now.
                del iterator
            self._close_pipes()

    def _close_pipes(self) -> None:
        if self._alive_writer is not None:
            self._alive_writer.close()
            self._alive_writer = None
        self._returns.close()
