"""When a pass has finished its epoch: the rules that move a loader's cursor, as pure logic.

A loader's cursor moves in three ways:

- `manual_pass`: `iter(loader)` moves the cursor past every batch it hands
  out, so `state_dict()` taken after any batch restores exactly the rest.
- `IteratorPasses`: the passes one framework iterator (a Keras EpochIterator)
  draws. How far such an iterator pulls says nothing about what was trained:
  Keras pulls a batch to build the model and throws that pass away, and reads
  ahead of the model by zero, one or two batches depending on its version, the
  device and `keras.distribution` — far enough, in a short epoch, to exhaust a
  pass before a single step has trained. So a pass never completes because it
  was pulled to its end. It completes when
    1. the framework says an epoch ended (`epoch_ended`), and the pass has
       handed out all its batches. A pass that has not (Keras's
       `steps_per_epoch` cutting a loader epoch into several Keras epochs)
       goes on into the next Keras epoch and completes at a later end; or
    2. it hands out its last batch, for an iterator that `completes_on_last`
       (TensorFlow, whose tf.data prefetch starts the next epoch's pass before
       Keras ends the current epoch, and never builds from a pass).
  When the framework throws its passes away (`reset`, after building the
  model), they are discarded and never complete.
  An iterator that `reads_only` (validation on the loader that is training)
  reads whole epochs at the cursor's epoch and never moves the cursor.
- `loose_pass`: a pass no framework iterator owns completes when exhausted.

In every case the cursor moves only if nobody moved it since the pass began
(`set_epoch` and `load_state_dict` win over a pass in progress).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from kloader._core.cursor import Cursor
from kloader._core.passes import Pass

_log = logging.getLogger(__name__)

Make = Callable[[int, int], Any]


def manual_pass(cursor: Cursor, make: Make) -> Pass:
    """The rest of the current epoch, moving the cursor past each batch handed out."""

    def advance(handed_out: Pass) -> None:
        handed_out.cursor.advance(handed_out.last, handed_out.position)

    return Pass(cursor, make=make, after_each=advance)


def loose_pass(cursor: Cursor, make: Make, *, length: int | None = None) -> Pass:
    """The rest of the current epoch (or `length` batches), completing when exhausted."""
    return Pass(cursor, make=make, length=length, when_exhausted=Pass.complete)


class IteratorPasses:
    """The passes one framework iterator draws from a loader, and when they complete.

    Args:
        cursor: the loader's cursor.
        completes_on_last: a pass completes as it hands out its last batch.
        reads_only: passes read whole epochs at the cursor's epoch and never complete.

    Example:
        ```python
        cursor = Cursor(batches_per_epoch=1)
        passes = IteratorPasses(cursor)
        built = passes.new_pass(make=Position)
        next(built)  # a pull to build the model, reading ahead past the end:
        list(built)
        passes.reset()  # thrown away: the cursor stays at epoch 0
        trained = passes.new_pass(make=Position)
        next(trained)
        passes.epoch_ended()
        assert cursor.position == (1, 0)
        ```
    """

    def __init__(self, cursor: Cursor, *, completes_on_last: bool = False, reads_only: bool = False):
        self.cursor = cursor
        self.completes_on_last = completes_on_last
        self.reads_only = reads_only
        # Started passes that may still complete. Held strongly: Keras may drop
        # an exhausted pass before it says that the epoch ended.
        self._open: list[Pass] = []
        self._made: weakref.WeakSet[Pass] = weakref.WeakSet()
        self.closed = False

    def new_pass(self, make: Make, *, length: int | None = None) -> Pass:
        """A pass for the framework: the rest of the cursor's epoch, or `length` batches."""
        if self.closed:
            length = 0
        if self.reads_only:
            length = self.cursor.batches_per_epoch if length is None else length
            made = Pass(self.cursor, make=make, from_epoch_start=True, length=length)
        else:
            made = Pass(self.cursor, make=make, length=length, after_each=self._handed_out)
        self._made.add(made)
        return made

    def _handed_out(self, handed_out: Pass) -> None:
        if handed_out.handed_out == 1:
            self._open.append(handed_out)
        if self.completes_on_last and handed_out.handed_out_all:
            handed_out.complete()
            self._forget_finished()

    def epoch_ended(self) -> None:
        """The framework finished an epoch: passes that handed out all their batches complete."""
        for open_pass in self._open:
            if open_pass.handed_out_all:
                open_pass.complete()
        self._forget_finished()

    def reset(self) -> None:
        """The framework threw away its passes (after building the model): none of them completes."""
        for open_pass in self._open:
            open_pass.discard()
        self._forget_finished()

    def close(self) -> None:
        """The framework's call is over: its passes hand out nothing more, now or later
        (a tf.data prefetch thread may go on pulling after the call returned)."""
        self.closed = True
        for made in list(self._made):
            if made.started and made.remaining and not (made.discarded or made.completed):
                _log.debug(
                    "kloader: a pass from epoch %d, batch %d was closed after %d batches, %d before its end",
                    *made.start,
                    made.handed_out,
                    made.remaining,
                )
            made.close()
        self._open.clear()

    def _forget_finished(self) -> None:
        self._open = [p for p in self._open if not (p.completed or p.discarded)]

    @property
    def open_passes(self) -> int:
        """Started passes that may still complete."""
        return len(self._open)
