"""Errors that keep their cause, and every way a worker can end, with any num_workers."""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref

import numpy as np
import psutil
import pytest

import kloader
from kloader._workers.failures import UnpicklableError

from utils import IdDataset, wait_until_a_worker_is_up


class LabelFileMissing(Exception):
    """A user's own exception type, with state of its own."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        return LabelFileMissing, (self.args[0], self.code)


class HoldsALock(Exception):
    """An exception that cannot be pickled."""

    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()


def fail_on_9(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
    if sample[1] == 9:
        raise LabelFileMissing("no label file for 9", code=42)
    return sample


def unpicklable_on_9(sample: tuple[np.ndarray, np.float32], rng: np.random.Generator) -> object:
    if sample[1] == 9:
        raise HoldsALock("locked out of 9")
    return sample


def first_error(num_workers: int, transform: object) -> kloader.SampleError:
    loader = kloader.Loader(
        IdDataset(16), batch_size=4, shuffle=False, transform=transform, num_workers=num_workers
    )
    with pytest.raises(kloader.SampleError) as error:
        list(loader)
    assert loader.worker_pids == []
    return error.value


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_cause_is_the_original_exception(num_workers: int) -> None:
    """SampleError.__cause__ is the user's exception, re-created with its type and state."""
    cause = first_error(num_workers, fail_on_9).__cause__
    assert type(cause) is LabelFileMissing
    assert str(cause) == "no label file for 9" and cause.code == 42


def test_the_first_line_is_the_users_error_with_index_and_epoch_then_the_traceback() -> None:
    """With workers the message starts as with 0 workers; the worker's traceback follows."""
    in_process = str(first_error(0, fail_on_9))
    with_workers = str(first_error(2, fail_on_9))
    first_line = (
        "transform(sample, rng) failed on sample 9 (epoch 0) with LabelFileMissing: no label file for 9"
    )
    assert in_process == first_line
    assert with_workers.splitlines()[0] == first_line
    assert "The worker's traceback" in with_workers and "fail_on_9" in with_workers
    assert "samples [8, 9, 10, 11]" in with_workers


def test_an_unpicklable_cause_arrives_as_its_text() -> None:
    cause = first_error(2, unpicklable_on_9).__cause__
    assert isinstance(cause, UnpicklableError)
    assert "HoldsALock: locked out of 9" in str(cause)


class EndTheWorker:
    """A transform that ends the worker process running it in one of the ways a process
    can end (never the main process, which makes batches too while workers start)."""

    def __init__(self, how: str):
        self.how, self.main = how, os.getpid()

    def __call__(self, sample: object, rng: np.random.Generator) -> object:
        if os.getpid() == self.main:
            return sample
        if self.how == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if self.how == "SystemExit":
            raise SystemExit(3)
        if self.how == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)
        os._exit(int(self.how))


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("KeyboardInterrupt", r"raised KeyboardInterrupt in worker \d \(pid \d+\), epoch \d+.*would stop"),
        ("SystemExit", r"raised SystemExit: 3 in worker \d \(pid \d+\), epoch \d+.*would stop"),
        ("0", r"exited with code 0\).*os._exit\(\)"),
        ("3", r"exited with code 3\).*os._exit\(\)"),
        ("SIGKILL", r"killed by SIGKILL\).*out-of-memory killer"),
    ],
)
def test_every_exit_of_a_worker_is_a_worker_error_with_advice(how: str, expected: str) -> None:
    """KeyboardInterrupt / SystemExit raised in a transform, os._exit, SIGKILL: a WorkerError
    that says what happened and what to do, within 15 s of the workers being up, and no
    worker is left."""
    loader = kloader.Loader(IdDataset(64), batch_size=4, seed=0, transform=EndTheWorker(how), num_workers=2)
    passes = iter(loader)
    next(passes)  # made here: the workers start
    wait_until_a_worker_is_up(loader)
    start = time.monotonic()
    with pytest.raises(kloader.WorkerError, match=expected) as error:
        for _ in range(100):
            list(passes)
            passes = iter(loader)
    assert time.monotonic() - start < 15
    assert loader.worker_pids == []
    helpers = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
    children = [
        c
        for c in psutil.Process().children(recursive=True)
        if not any(h in " ".join(c.cmdline()) for h in helpers)
    ]
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], str(error.value)


def test_a_start_error_keeps_no_local_of_the_start_alive() -> None:
    """A start that failed half-way (the fork server gone under a Ctrl-C sent to the whole
    process group) left torch's half-built iterator in its traceback's frames: its queues'
    named semaphores stayed in /dev/shm for as long as anything held the error (IPython
    keeps the last one). The error kept for the report holds no local of those frames."""
    from kloader._workers import processes

    class HalfBuilt:
        pass

    def start(half_built: HalfBuilt) -> None:
        raise ConnectionRefusedError("the fork server is gone")

    held = HalfBuilt()
    alive = weakref.ref(held)
    try:
        start(held)
    except ConnectionRefusedError as caught:
        error = caught
    del held
    assert alive() is not None, "the traceback's frame holds it"
    processes._clear_frames(error)
    assert alive() is None
    assert error.__traceback__ is not None and "the fork server is gone" in str(error)
