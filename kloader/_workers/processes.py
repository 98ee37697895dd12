"""The worker processes' lifecycle: start, readiness, results, death, stop.

One `torch.utils.data.DataLoader` iteration is kept open for the life of the
processes, over an endless sampler of *tasks*. torch supplies the processes,
queues, ordering, failure detection, error propagation with the worker's
traceback, and shared-memory transfer of tensors. Each worker runs
`BatchMaker.make` and writes the batch straight into shared memory.

What the workers get is pickled *by value* with cloudpickle: a transform or a
dataset class defined in a script's `__main__`, a notebook cell, `python -c`
or standard input reaches them as code, so they never import the main module.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
import traceback
import warnings
import weakref
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, NoReturn

import cloudpickle
import torch.utils.data

from kloader._core.batches import BatchMaker
from kloader._core.errors import WorkerError
from kloader._workers import multiprocessing_internals, process_settings, shared_memory, torch_internals
from kloader._workers.buffers import Returns, WorkerBuffers
from kloader._workers.failures import Failure
from kloader._workers.plan import Key, Task

_DEATH_WAIT_S = 1.0
_STALL_CHECK_S = 1.0
# The longest a close waits for its queues' feeder threads to let go of their semaphores.
_FEEDER_WAIT_S = 2.0
# With no `timeout`, a worker that holds one batch this long gets one warning.
DEFAULT_STALL_WARNING_S = 60.0


class _ByValuePickler(cloudpickle.Pickler):  # type: ignore[misc]
    # torch's reductions first: tensors in shared memory travel as file
    # descriptors (shared_memory.SharedArraySource), not as bytes.
    dispatch_table: ClassVar[Mapping[Any, Any]] = ChainMap(
        torch_internals.forking_reducers(), cloudpickle.Pickler.dispatch_table
    )


def _dumps_by_value(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _ByValuePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


class _ByValue:
    """Pickles `obj` with cloudpickle inside an ordinary pickle (the process start's)."""

    def __init__(self, obj: Any):
        self.obj = obj

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return pickle.loads, (_dumps_by_value(self.obj),)


class _Null:
    """A file that takes and forgets what the pickler writes: bytes, and, for large arrays
    (protocol 5), the `pickle.PickleBuffer` of their memory, which has no len()."""

    def write(self, data: bytes | pickle.PickleBuffer) -> int:
        return memoryview(data).nbytes


def check_picklable(obj: Any, what: str) -> None:
    """Raises a TypeError that says how to fix it when `obj` cannot go to a worker."""
    try:
        cloudpickle.Pickler(_Null(), protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    except Exception as exc:
        raise TypeError(
            f"num_workers > 0 sends the {what} to worker processes by pickling (with cloudpickle), "
            f"but it cannot be pickled: {type(exc).__name__}: {exc}. Drop unpicklable members such "
            "as open files, locks or generators (open them in __getitem__ instead), or use "
            "num_workers=0."
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
    process sends back the batch buffers it has let go of (`buffers`), and the
    tasks it made itself meanwhile (a skipped task comes back as None).

    `started` is the write end of a pipe on which each worker says it is up.

    `holding` is shared memory in which worker w keeps, at [3w, 3w + 3), the
    epoch and batch it is making and since when (0: idle), for the main
    process's stall check.

    `settings` are the main process's module-level settings that decide what a
    worker makes (`process_settings`), taken when the workers start and set in
    each worker before its first task.
    """

    def __init__(
        self,
        maker: BatchMaker,
        parent_alive: Any,
        returns: list[Any],
        started: Any,
        holding: Any,
        settings: dict[tuple[str, str], Any],
    ):
        self.maker = maker
        self.parent_alive = parent_alive
        self.returns = returns
        self.started = started
        self.holding = holding
        self.settings = settings
        self._buffers: WorkerBuffers | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = (self.parent_alive, self.returns, self.started, self.holding, self.settings)
        return _WorkerDataset, (_ByValue(self.maker), *state)

    def __getitem__(self, task: Task) -> tuple[Key, Any, list[str]]:
        """(key, batch, global-random notices): the notices are warned in the main process."""
        if self._buffers is None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
            self._buffers = WorkerBuffers(worker, self.returns[worker])
            self.maker.collect_notices = True
        self._buffers.take_messages()
        if task.key in self._buffers.skipped:  # made by the main process meanwhile
            del self._buffers.skipped[task.key]
            return task.key, None, []
        at = 3 * self._buffers.worker
        self.holding[at : at + 3] = [task.epoch, task.batch, time.time()]
        try:
            batch = self.maker.make(task.seed, task.epoch, task.indices, self._buffers.allocate)
        except BaseException as error:  # an exit too: the main process says what happened
            worker, pid = self._buffers.worker, os.getpid()
            failure = Failure(
                error, worker=worker, pid=pid, epoch=task.epoch, batch=task.batch, indices=task.indices
            )
            return task.key, failure, self.maker.take_notices()
        finally:
            self.holding[at + 2] = 0.0
        return task.key, batch, self.maker.take_notices()


def _worker_started(worker_id: int) -> None:
    """worker_init_fn: take the main process's settings; exit as soon as the main process
    is gone; say this worker is up."""
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    process_settings.apply(getattr(dataset, "settings", {}))
    parent_alive = getattr(dataset, "parent_alive", None)
    if parent_alive is not None:
        threading.Thread(target=_exit_on_end_of_file, args=(parent_alive,), daemon=True).start()
    started = getattr(dataset, "started", None)
    if started is not None:
        started.send(worker_id)


def _exit_on_end_of_file(connection: Any) -> None:
    multiprocessing.connection.wait([connection])
    os._exit(0)


class _Recording:
    """The tasks torch sends, remembered by key until their result comes back."""

    def __init__(self, tasks: Iterable[Task], sent: dict[Key, Task]):
        self._tasks, self._sent = tasks, sent

    def __iter__(self) -> Iterator[Task]:
        for task in self._tasks:
            self._sent[task.key] = task
            yield task


def _keep_as_is(result: Any) -> Any:
    return result


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its cause (or context), and so on, each once."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _clear_frames(error: BaseException) -> None:
    """Clears the local variables of the frames an error passed through (its traceback still
    says where), so that a start that failed half-way (the fork server gone under a Ctrl-C
    sent to the whole process group) does not keep the half-built iterator, its queues and
    their named semaphores, alive for as long as anything holds the error."""
    for link in _chain(error):
        traceback.clear_frames(link.__traceback__)


def _drop_torch_frames(error: BaseException) -> None:
    """Forgets where in torch's iterator an error passed, so that the error does not
    keep the stopped iterator (its queues and semaphores) alive for as long as the
    user holds the error. What matters is kept: the message, which for an error in
    a worker carries the worker's traceback, and the chain of causes."""
    for link in _chain(error):
        link.__traceback__ = None


def _start_in_thread(
    processes_ref: weakref.ref[WorkerProcesses], data_loader: Any, worker_ends: list[Any]
) -> None:
    """Starts the worker processes (slow: about a second for a fresh fork server)."""
    iterator, error = None, None
    try:
        iterator = iter(data_loader)
    except BaseException as exc:
        error = exc
    finally:
        for end in worker_ends:
            end.close()  # the workers have their own copies now
    processes = processes_ref()
    if processes is not None:
        processes._started(iterator, error)
    elif iterator is not None:
        torch_internals.shutdown_workers(iterator)


class WorkerProcesses:
    """`num_workers` processes making the tasks `tasks` yields, started in a background thread.

    Args:
        maker: what each worker runs (sent by value).
        tasks: the tasks to send, pulled by torch one at a time as results are taken.
        num_workers: how many processes.
        start_method: "forkserver", "spawn" or "fork".
        prefetch: tasks in flight per worker.
    """

    def __init__(
        self,
        maker: BatchMaker,
        tasks: Iterable[Task],
        *,
        num_workers: int,
        start_method: str,
        prefetch: int,
        timeout: float | None = None,
    ):
        self.start_method = start_method
        self._maker = maker
        self._timeout = timeout
        self._warned_of_a_stall = False
        self._sent: dict[Key, Task] = {}  # tasks out with the workers, by key
        # Global-random notices from the workers, for the main process to warn about.
        self.notices: list[str] = []
        self._iterator: Any = None
        self._start_error: BaseException | None = None
        context = multiprocessing_internals.context_for(start_method)
        self._alive_writer: Any = None
        parent_alive = None
        if start_method != "fork":
            # Under fork, workers are children of this process, torch's watchdog
            # sees its death, and they would inherit the write end anyway.
            parent_alive, self._alive_writer = context.Pipe(duplex=False)
        self._started_reader, started_writer = context.Pipe(duplex=False)
        self._started_ids: set[int] = set()  # the workers that said they are up
        self._holding = context.RawArray("d", 3 * num_workers)
        return_readers, return_writers = zip(*(context.Pipe(duplex=False) for _ in range(num_workers)))
        self._returns = Returns(list(return_writers))
        # Closed here once the workers have their copies: then end-of-file on
        # `started` means every worker has exited.
        worker_ends = [*return_readers, started_writer, *([parent_alive] if parent_alive is not None else [])]
        try:
            data_loader = torch_internals.QuietDataLoader(
                _WorkerDataset(  # type: ignore[arg-type]
                    maker,
                    parent_alive,
                    list(return_readers),
                    started_writer,
                    self._holding,
                    process_settings.snapshot(),
                ),
                batch_size=None,
                sampler=_Recording(tasks, self._sent),
                # Waits for a result at most this long at a time, then checks for stalls.
                timeout=_STALL_CHECK_S,
                num_workers=num_workers,
                collate_fn=_keep_as_is,
                multiprocessing_context=context,
                prefetch_factor=prefetch,
                worker_init_fn=_worker_started,
                # torch draws its workers' base seed from this generator: a private one
                # leaves the user's global torch random state untouched (and keeps the
                # global-random guard from seeing the draw, made in the start thread).
                generator=torch.Generator(),
            )
            self._starter: threading.Thread | None = threading.Thread(
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

    @property
    def up(self) -> bool:
        """True once the processes are started (they may still be initialising)."""
        return self._iterator is not None

    def _started(self, iterator: Any, error: BaseException | None) -> None:
        # Called by the starting thread when the processes are up (or failed to start).
        if error is not None:
            _clear_frames(error)
            self._start_error = error
            self._close_pipes()
            return
        torch_internals.stop_death_reports_in_main_thread(iterator)
        self._iterator = iterator

    def wait_started(self) -> BaseException | None:
        """Waits (the caller holding no lock the sampler takes) for the start; its error, if any."""
        starter = self._starter
        if starter is not None and starter is not threading.current_thread():
            starter.join()
        return self._start_error

    def some_worker_started(self) -> bool:
        """True once a worker can make batches, or once no worker ever will (all exited)."""
        self._take_started()
        return bool(self._started_ids) or self._started_reader.closed

    def _take_started(self) -> None:
        try:
            while self._started_reader.poll(0):
                self._started_ids.add(self._started_reader.recv())
        except (EOFError, OSError):  # every worker has exited; or closed here
            self._started_reader.close()

    @property
    def buffers_reused(self) -> int:
        """How many batch buffers came back refilled by a worker."""
        return self._returns.reused

    @property
    def pids(self) -> list[int]:
        if self._iterator is None:
            return []
        return [w.pid for w in torch_internals.worker_processes(self._iterator) if w.pid is not None]

    def send(self, skip: list[Key] | None = None) -> None:
        """Sends back the buffers the main process let go of, and tasks to skip."""
        self._returns.send(skip)

    def next(self) -> tuple[Key, Any]:
        """The next result, in the order tasks were sent: (key, batch or None if skipped).

        A failure is raised as is, or as a WorkerError when a worker died;
        the caller must close the processes then.
        """
        while True:
            try:
                key, batch, notices = next(self._iterator)
                self.notices += notices
                break
            except RuntimeError as error:
                if not torch_internals.timed_out(error):
                    self._raise_failure(error)
                self._check_for_stalls()
            except BaseException as error:
                self._raise_failure(error)
        self._sent.pop(key, None)
        if isinstance(batch, Failure):
            raise batch.exception()
        return key, self._returns.receive(batch)

    def _raise_failure(self, error: BaseException) -> NoReturn:
        dead = self._dead_workers(wait=not torch_internals.raised_in_a_worker(error))
        _drop_torch_frames(error)
        if dead:
            raise WorkerError(self._death_message(dead)) from error
        raise error.with_traceback(None) from error.__cause__

    def _check_for_stalls(self) -> None:
        """Raises (timeout set) or warns once (no timeout, after a generous delay) when a
        worker has held one batch for too long."""
        limit = self._timeout if self._timeout is not None else DEFAULT_STALL_WARNING_S
        if self._timeout is None and self._warned_of_a_stall:
            return
        now = time.time()
        pids = [w.pid for w in torch_internals.worker_processes(self._iterator)]
        for worker, pid in enumerate(pids):
            epoch, batch, since = self._holding[3 * worker : 3 * worker + 3]
            if not since or now - since <= limit:
                continue
            sent = list(self._sent.values())
            task = next((t for t in sent if (t.epoch, t.batch) == (int(epoch), int(batch))), None)
            samples = "samples unknown"
            if task is not None:
                samples = f"samples {task.indices.tolist()}"
                files = self._maker.files_of(task.indices)
                if files:
                    samples += f", files {files}"
            message = (
                f"kloader worker {worker} (pid {pid}) has been making batch {int(batch)} of epoch "
                f"{int(epoch)} ({samples}) for {now - since:.0f} s"
            )
            advice = (
                "A source or a transform that does not return (a read from a network file system that "
                "hangs, a lock, an endless loop) holds up the loop: make those samples with "
                "num_workers=0 (loader.indices(batch, epoch) gives them) to see where it waits."
            )
            if self._timeout is not None:
                raise WorkerError(
                    f"{message}, longer than timeout={self._timeout:g} s. All workers were shut down. {advice}"
                )
            self._warned_of_a_stall = True
            warnings.warn(
                f"{message}. Still waiting. {advice} Pass timeout=SECONDS to kloader.Loader to raise "
                "an error instead (this warning is given once).",
                RuntimeWarning,
                stacklevel=2,
            )
            return

    def _dead_workers(self, wait: bool) -> list[tuple[int, str]]:
        workers = torch_internals.worker_processes(self._iterator) if self._iterator is not None else []
        if wait:
            # A worker's death can surface first as a broken hand-over of its
            # last batch; its exit status follows within milliseconds.
            multiprocessing.connection.wait([w.sentinel for w in workers], timeout=_DEATH_WAIT_S)
        self._take_started()
        dead = []
        for worker_id, worker in enumerate(workers):
            code = worker.exitcode
            if code is not None and code < 0:
                dead.append((worker_id, f"pid {worker.pid} killed by {signal.Signals(-code).name}"))
            elif code is not None:  # even 0: a worker must not end while in use
                dead.append((worker_id, f"pid {worker.pid} exited with code {code}"))
        return dead

    def _death_message(self, dead: list[tuple[int, str]]) -> str:
        message = (
            f"A kloader worker process died ({'; '.join(how for _, how in dead)}). All workers were "
            "shut down; iterating again starts new ones. "
        )
        if not any(worker_id in self._started_ids or "killed by" in how for worker_id, how in dead):
            guard = (
                "Workers started with 'spawn' import the main module: a script needs an "
                "`if __name__ == '__main__':` guard around its training code (or use the default "
                "start method, 'forkserver', whose workers never import it). "
                if self.start_method == "spawn"
                else ""
            )
            return message + (
                "It died before it was up, so it most likely failed to start: its traceback "
                f"is printed above. {guard}Workers unpickle the source and the transform: check that "
                "the modules they come from import without side effects."
            )
        if any("SIGKILL" in how for _, how in dead):
            return message + (
                "A worker killed by SIGKILL was most often stopped by the out-of-memory killer: use "
                "fewer workers, a smaller batch_size, or less prefetch."
            )
        if any("killed by" in how for _, how in dead):
            return message + (
                "A worker killed by a signal other than SIGKILL most often crashed in native code "
                "(a C extension the source or the transform calls): try num_workers=0 to see the "
                "crash in this process."
            )
        return message + (
            "A worker that exits by itself was ended by the code it runs: the source or the "
            "transform called os._exit() or exit() in a C extension. Raise an exception instead "
            "(it reaches you as kloader.SampleError naming the sample)."
        )

    def close(self) -> None:
        """Stops the processes (waits for a start in progress first). Safe to call twice."""
        self.wait_started()
        self._starter = None
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            pids = [w.pid for w in torch_internals.worker_processes(iterator) if w.pid is not None]
            queues = torch_internals.queues_of(iterator)
            torch_internals.shutdown_workers(iterator)
            # Its queues' named semaphores are unlinked when they are freed: now, once
            # their feeder threads (which flush what was put, then end) let go of them.
            # Bounded: a feeder blocked on a pipe no worker reads any more never ends.
            deadline = time.monotonic() + _FEEDER_WAIT_S
            for queue in queues:
                multiprocessing_internals.wait_for_feeder_thread(queue, max(0.0, deadline - time.monotonic()))
            del iterator, queues
            shared_memory.remove_segments_of(pids)
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self._alive_writer is not None:
            self._alive_writer.close()
            self._alive_writer = None
        self._returns.close()
        self._started_reader.close()
