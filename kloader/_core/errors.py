"""The errors kloader raises for bad samples and failed workers, and the warning for global randomness."""

from __future__ import annotations

import sys
from typing import Any

# The C-level slot that `raise ... from ...` fills, as a descriptor.
_CHAINED_CAUSE: Any = BaseException.__dict__["__cause__"]


class _KeepsItsCause(Exception):
    """An error whose `__cause__` survives Keras.

    Keras re-raises what leaves `fit`, `evaluate` and `predict` `from None`
    (its traceback filtering), which clears `__cause__`. kloader raises these
    errors while handling the original exception (`raise ... from error`), so
    each remembers the exception being handled when it was made and returns it
    as `__cause__` when Keras has cleared the chained one.
    """

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._raised_while_handling = sys.exc_info()[1]

    @property
    def __cause__(self) -> BaseException | None:
        chained: BaseException | None = _CHAINED_CAUSE.__get__(self)
        return chained if chained is not None else self._raised_while_handling

    @__cause__.setter
    def __cause__(self, value: BaseException | None) -> None:
        # Assigned (a worker's error, re-created here with its cause), not chained by a
        # `raise`: Keras's `from None` clears the slot, not what was assigned.
        _CHAINED_CAUSE.__set__(self, value)
        self._raised_while_handling = value

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as its message only: the cause may not pickle.
        return (type(self), self.args)


class SampleError(_KeepsItsCause):
    """Reading or transforming one sample failed.

    The message names the sample index and the epoch (and the file, for image
    sources). The original exception is `__cause__`, also when the error
    leaves `model.fit`; when the failure happened in a worker process, the
    worker's traceback is part of the message.

    Example:
        ```python
        try:
            batch = loader[0]
        except kloader.SampleError as error:
            print(error)  # "transform(sample, rng) failed on sample 3 (epoch 0): ..."
        ```
    """


class WorkerError(_KeepsItsCause, RuntimeError):
    """A worker process died or could not start; the message says which and what to do."""


class GlobalRandomWarning(UserWarning):
    """A source or transform drew from a global random generator instead of `rng`.

    Its batches then differ per run, per `num_workers` and after a resume. The
    warning names the generator and the sample; the fix is to draw from the
    `rng` argument of `transform(sample, rng)`. Given once per loader, with any
    `num_workers` (a worker's warning is raised in the main process).

    Example:
        ```python
        def transform(sample, rng):
            return sample + np.random.normal()  # GlobalRandomWarning: use rng.normal()

        loader = kloader.Loader(x, batch_size=32, seed=1, transform=transform)
        ```
    """
