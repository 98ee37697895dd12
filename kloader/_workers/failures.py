"""A worker's failure, sent to the main process as a result and raised there as it was.

torch re-raises a worker's exception as a new exception of the same type whose
message starts with "Caught X in DataLoader worker process N" and whose cause
is lost. kloader catches the failure in the worker instead and sends it back
as a `Failure`: the main process raises an error whose message starts with the
user's error (the sample index, the epoch and, for images, the file), followed
by the worker's traceback, and whose `__cause__` is the original exception,
re-created from its pickle (or, when it cannot be pickled, its type and text).

An exit raised in a transform or a source (`KeyboardInterrupt`, `SystemExit`)
becomes a `WorkerError` that says a transform must not stop its process.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle
import numpy as np

from kloader._core.errors import SampleError, WorkerError
from kloader._workers import shared_memory


def _dumps(obj: Any) -> bytes | None:
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]
    except Exception:
        return None


def _loads(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return pickle.loads(data)
    except Exception:
        return None


class UnpicklableError(Exception):
    """Stands in, as `__cause__`, for a worker's exception that could not be pickled."""


class Failure:
    """What a worker sends back instead of a batch when making it failed.

    Args:
        error: the exception raised while making the batch.
        worker: the worker's id.
        pid: the worker's process id.
        epoch: the batch's epoch.
        batch: the batch's index in its epoch.
        indices: the batch's sample indices.
    """

    def __init__(
        self, error: BaseException, *, worker: int, pid: int, epoch: int, batch: int, indices: np.ndarray
    ):
        self.where = f"worker {worker} (pid {pid}), epoch {epoch}, batch {batch}, samples {indices.tolist()}"
        self.exits = isinstance(error, (KeyboardInterrupt, SystemExit))
        self.is_sample_error = isinstance(error, SampleError)
        self.out_of_shared_memory = shared_memory.out_of_shared_memory(error)
        self.type_name = type(error).__name__
        self.message = str(error)
        self.traceback = "".join(traceback.format_exception(error))
        self.error = None if self.is_sample_error or self.exits else _dumps(error)
        cause = error.__cause__
        self.cause = _dumps(cause) if cause is not None else None
        self.cause_text = f"{type(cause).__name__}: {cause}" if cause is not None else ""

    def exception(self) -> BaseException:
        """The exception to raise in the main process (its `__cause__` set)."""
        details = f"\n\nIn {self.where}. The worker's traceback:\n{self.traceback}"
        if self.exits:
            error: BaseException = WorkerError(
                f"A transform or the source raised {self.type_name}"
                f"{': ' + self.message if self.message else ''} in {self.where}: that would stop a "
                "worker process. All workers were shut down. Raise an ordinary exception instead "
                "(it reaches you as kloader.SampleError naming the sample), or return normally."
                f"\n\nThe worker's traceback:\n{self.traceback}"
            )
            return error
        if self.out_of_shared_memory:
            error = WorkerError(f"{shared_memory.shared_memory_advice()}\n\n{self.message}{details}")
        elif self.is_sample_error:
            error = SampleError(self.message + details)
        else:
            original = _loads(self.error)
            rebuilt = _with_message(original, self.message + details) if original is not None else None
            error = rebuilt or RuntimeError(f"{self.type_name}: {self.message}{details}")
        cause = _loads(self.cause)
        if cause is None and self.cause_text:
            cause = UnpicklableError(f"{self.cause_text} (raised in a worker; it could not be pickled)")
        error.__cause__ = cause
        return error


def _with_message(original: BaseException, message: str) -> BaseException | None:
    """An exception of `original`'s type with `message`, when the type takes a message."""
    try:
        return type(original)(message)
    except Exception:
        return None
