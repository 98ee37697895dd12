"""A pass: one run of batches, from where the cursor stands when it is first pulled.

A pass walks positions (epoch, batch) and hands out `make(epoch, batch)` for
each: a batch made here or by a worker, or the sample indices TensorFlow
gathers. Whether the cursor moves when a pass ends is decided by the rules in
`kloader._core.epochs`, not by the pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kloader._core.cursor import Cursor, Position

Hook = Callable[["Pass"], object]

_this_thread = threading.local()


def making() -> Pass | None:
    """The pass whose batch this thread is making now (inside `next()` on it), or None."""
    making: Pass | None = getattr(_this_thread, "making", None)
    return making


def _ignore(_: Pass) -> None:
    pass


def _position(epoch: int, batch: int) -> Position:
    return Position(epoch, batch)


class Pass:
    """Batches from the cursor's position at the first pull.

    Args:
        cursor: the cursor to start from.
        make: what to hand out for a position (default: the position itself).
        length: how many positions to hand out, running on into later epochs;
            None hands out the rest of the starting epoch.
        from_epoch_start: start at batch 0 of the cursor's epoch instead of at
            the cursor's batch (a pass that only reads, beside one that trains).
        epoch_to_read: with `from_epoch_start`, the epoch to start in, asked at the
            first pull, instead of the cursor's.
        after_each: called after each batch is made, before it is handed out.
        when_exhausted: called when the pass is pulled past its last position.

    Example:
        ```python
        cursor = Cursor(batches_per_epoch=3)
        cursor.jump_to(0, 1)
        assert list(Pass(cursor)) == [(0, 1), (0, 2)]  # positions, with the default `make`
        ```
    """

    def __init__(
        self,
        cursor: Cursor,
        *,
        make: Callable[[int, int], Any] = _position,
        length: int | None = None,
        from_epoch_start: bool = False,
        epoch_to_read: Callable[[], int] | None = None,
        after_each: Hook = _ignore,
        when_exhausted: Hook = _ignore,
    ):
        self.cursor = cursor
        self._make = make
        self._length = length
        self._from_epoch_start = from_epoch_start
        self._epoch_to_read = epoch_to_read
        self._after_each = after_each
        self._when_exhausted = when_exhausted
        self.started = False
        self.start = Position(0, 0)
        self.position = Position(0, 0)  # the next position to hand out
        self.last = Position(0, 0)  # the last position handed out
        self.remaining = 0
        self.handed_out = 0  # positions handed out so far
        self.trained = 0  # of those, how many the framework says it trained on (IteratorPasses.trained)
        self.completed = False
        self.discarded = False
        self.closed = False
        self._ending = threading.Lock()  # complete() and discard(), from any thread

    @property
    def handed_out_all(self) -> bool:
        return self.started and self.remaining == 0

    def is_open(self) -> bool:
        """False once `close()` was called: the pass hands out nothing more."""
        return not self.closed

    def __iter__(self) -> Pass:
        return self

    def __next__(self) -> Any:
        if not self.started:
            self._begin()
        if self.remaining == 0:
            self._when_exhausted(self)
            raise StopIteration
        outer, _this_thread.making = making(), self
        try:
            made = self._make(*self.position)
        except BaseException as error:
            # The pass is over: a framework that keeps pulling (tf.data's
            # prefetch thread) must not start workers again.
            self.remaining = 0
            if isinstance(error, StopIteration):
                # Let through, it would end the framework's loop over this pass as if
                # the epoch were over: the rest of the epoch dropped without a word.
                epoch, batch = self.position
                raise RuntimeError(
                    f"Making batch {batch} of epoch {epoch} raised StopIteration, which would have "
                    "ended the epoch early without an error. This is a bug in kloader: please report it."
                ) from error
            raise
        finally:
            _this_thread.making = outer
        self.last = self.position
        self.remaining -= 1
        self.handed_out += 1
        self.position = self.cursor.after(self.last)
        self._after_each(self)
        return made

    def _begin(self) -> None:
        cursor_at = self.cursor.position
        if self._from_epoch_start:
            epoch = cursor_at.epoch if self._epoch_to_read is None else self._epoch_to_read()
            self.start = Position(epoch, 0)
        else:
            self.start = cursor_at
        self.position = self.start
        per_epoch = self.cursor.batches_per_epoch
        self.remaining = per_epoch - self.start.batch if self._length is None else self._length
        self.started = True

    def close(self) -> None:
        """Hands out nothing more; never completes. A batch being made meanwhile, on
        another thread, starts no worker process (see `making`)."""
        if not self.started:
            self._begin()
        self.remaining = 0
        self.discarded = True
        self.closed = True

    def complete(self) -> bool:
        """The pass finished its epoch: the cursor moves past its last position, unless the
        pass never started, was discarded, already completed, or the cursor was moved
        since the pass read it. Returns whether the cursor moved."""
        with self._ending:
            if self.completed or self.discarded or not self.started:
                return False
            self.completed = True
            return self.cursor.advance(self.start, self.position)

    def discard(self) -> None:
        """The pass was thrown away: it never completes. Once this returns, a completion
        running in another thread (tf.data's) has either finished or will not happen."""
        with self._ending:
            self.discarded = True
