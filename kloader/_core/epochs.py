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
       Keras ends the current epoch).
  When the framework throws its passes away (`reset`, after building the
  model), they are discarded and never complete; one that completed as it
  handed out its last batch (TensorFlow builds from a pass under a
  tf.distribute strategy, and tf.data may prefetch a short pass to its end
  before Keras throws it away) is taken back: the cursor returns to its start.
  When the framework's call ends in the middle of a pass because its epochs
  are shorter than the loader's (Keras's `steps_per_epoch`), the cursor moves
  to the batch after the last one it says it trained (`trained`, counted by
  its callbacks), so that the next call goes on from there instead of
  training the same batches again. When it ends there because it was
  `stopped` in the middle of an epoch (Keras's `stop_training`), the batches
  of that epoch do not count: the cursor moves to where the epoch began (the
  pass's start, or the end of the Keras epoch before it in the same pass), and
  the next call trains the epoch again, in full. Either way on every backend:
  on TensorFlow, whose pass completed as tf.data prefetched its last batch,
  the cursor moves back.
  An iterator that `reads_only` (validation on the loader that is training)
  reads whole epochs and never moves the cursor: the epoch that the batches
  the training iterator says it trained reached (`trained_to`), which
  TensorFlow's prefetch may have run ahead of.
- `loose_pass`: a pass no framework iterator owns completes when exhausted.

In every case the cursor moves only if nobody moved it since the pass began
(`set_epoch` and `load_state_dict` win over a pass in progress).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from kloader._core.cursor import Cursor, Position
from kloader._core.passes import Pass

_log = logging.getLogger(__name__)

Make = Callable[[int, int], Any]

# Passes kept for `IteratorPasses.trained`, at most: one being trained, one started
# ahead by a prefetch, and room to spare.
_KEPT_UNTRAINED = 8


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
        reads_only: passes read whole epochs (at the cursor's epoch) and never complete.
        reads_beside: with `reads_only`, the passes that train from the same cursor:
            read the epoch their trained batches reached (`trained_to`) instead.

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

    def __init__(
        self,
        cursor: Cursor,
        *,
        completes_on_last: bool = False,
        reads_only: bool = False,
        reads_beside: IteratorPasses | None = None,
    ):
        self.cursor = cursor
        self.completes_on_last = completes_on_last
        self.reads_only = reads_only
        self._reads_beside = reads_beside
        # Started passes that may still complete. Held strongly: Keras may drop
        # an exhausted pass before it says that the epoch ended.
        self._open: list[Pass] = []
        self._made: weakref.WeakSet[Pass] = weakref.WeakSet()
        # Passes that handed out batches, in that order, until all of them are trained.
        self._in_training: list[Pass] = []
        # Passes that began handing out batches since the framework last ended an epoch:
        # what a `reset` throws away (Keras resets at the start of each call, so earlier
        # passes of a reused iterator, an earlier evaluation's, keep what they did).
        self._since_epoch_end: list[Pass] = []
        # The framework's threads hand out batches (tf.data's) while this one says what it
        # trained or that an epoch ended.
        self._lock = threading.RLock()
        self._this_epoch = 0  # batches trained in the framework's epoch in progress (`training`)
        self._stopped_batches = 0  # trained in the epoch the framework stopped in the middle of
        self._counted = False  # whether the framework says what it trained (`trained`)
        self.closed = False

    def new_pass(self, make: Make, *, length: int | None = None) -> Pass:
        """A pass for the framework: the rest of the cursor's epoch, or `length` batches."""
        if self.closed:
            length = 0
        if self.reads_only:
            length = self.cursor.batches_per_epoch if length is None else length
            beside = self._reads_beside
            epoch_to_read = None if beside is None else (lambda: beside.trained_to().epoch)
            made = Pass(
                self.cursor, make=make, from_epoch_start=True, epoch_to_read=epoch_to_read, length=length
            )
        else:
            made = Pass(self.cursor, make=make, length=length, after_each=self._handed_out)
        self._made.add(made)
        return made

    def _handed_out(self, handed_out: Pass) -> None:
        with self._lock:
            if handed_out.handed_out == 1:
                self._open.append(handed_out)
                self._in_training.append(handed_out)
                self._since_epoch_end.append(handed_out)
                # `trained` keeps this list to the passes not yet trained (two or three); a
                # framework that never says what it trained must not make it grow each epoch.
                del self._in_training[:-_KEPT_UNTRAINED]
                del self._since_epoch_end[:-_KEPT_UNTRAINED]
            if self.completes_on_last and handed_out.handed_out_all:
                handed_out.complete()
                self._forget_finished()

    def epoch_ended(self) -> None:
        """The framework finished an epoch: passes that handed out all their batches complete."""
        with self._lock:
            for open_pass in self._open:
                if open_pass.handed_out_all:
                    open_pass.complete()
            self._since_epoch_end.clear()
            self._forget_finished()

    def trained(self, batches: int) -> None:
        """The framework trained `batches` more batches from these passes: the next ones they
        handed out, in the order they handed them out (discarded passes never train)."""
        with self._lock:
            self._counted = True
            for made, taken in self._shared_out(batches):
                made.trained += taken
            self._in_training = [
                made
                for made in self._in_training
                if not made.discarded and not (made.completed and made.trained == made.handed_out)
            ]

    def _shared_out(self, batches: int) -> Iterator[tuple[Pass, int]]:
        """Each pass in training, with how many of `batches` more trained batches are its:
        the next ones the passes handed out, in the order they handed them out (discarded
        passes never train)."""
        for made in self._in_training:
            if made.discarded:
                continue
            taken = min(batches, made.handed_out - made.trained)
            batches -= taken
            yield made, taken

    def evaluated(self, batches: int) -> None:
        """An evaluation (one epoch, after which the framework throws its pass away) used
        `batches` batches of the latest pass. If that is fewer than the pass holds, the
        pass never completes, as where nothing reads ahead: a completion that came first
        (a prefetch, tf.data's, that pulled the pass to its end, possibly still pulling
        in its own thread) is taken back, and the cursor returns to the pass's start."""
        with self._lock:
            if not self._in_training:
                return
            latest = self._in_training[-1]
            if not latest.started or batches >= latest.handed_out + latest.remaining:
                return
            if self._take_back(latest):
                _log.debug(
                    "kloader: an evaluation used %d of the %d batches of a pass from epoch %d, "
                    "batch %d: the pass does not complete",
                    batches,
                    latest.handed_out,
                    *latest.start,
                )

    def _take_back(self, made: Pass) -> bool:
        """Discards `made`; if it had completed, the cursor returns to its start (unless it
        was moved since). Returns whether the cursor moved back."""
        made.discard()
        return made.completed and self.cursor.advance_from_any((made.position,), made.start)

    def interrupted(self) -> None:
        """The framework's call left through an exception, in the middle of an epoch it
        never reported: the batches of the epochs it ended are all it trained, so the cursor
        goes back to where that epoch began, even where a pass of it completed early
        (TensorFlow's, pulled to its end by tf.data's prefetch)."""
        with self._lock:
            self._counted = True
            self._this_epoch = 0

    def training(self, batches: int) -> None:
        """The framework trained `batches` more batches in the epoch in progress. They count
        (`trained`) when it says that epoch is over (`epoch_trained`); meanwhile they say
        which epoch a validation reads (`trained_to`)."""
        with self._lock:
            self._this_epoch += batches

    def epoch_trained(self, *, stopped: bool = False) -> None:
        """The framework's epoch in progress is over: the batches `training` counted in it
        are `trained`; `stopped`: it stopped in their middle (see `stopped`)."""
        with self._lock:
            batches, self._this_epoch = self._this_epoch, 0
            self.trained(batches)
            if stopped:
                self.stopped(batches)

    def stopped(self, batches: int) -> None:
        """The framework stopped in the middle of an epoch, after training (and reporting to
        `trained`) `batches` batches of it: the next call trains that epoch again from its
        start, or from the start of the pass it cut, if the epoch began in an earlier pass."""
        with self._lock:
            self._stopped_batches = batches

    def trained_to(self) -> Position:
        """Where the batches the framework said it trained (in ended epochs, and so far in the
        one in progress) leave the cursor, whatever its read-ahead did: after the last of
        them (when nothing was counted yet, where the cursor stands). The epoch a
        validation on the same loader reads."""
        with self._lock:
            after_last_trained = None
            if self._counted or self._this_epoch:
                for made, in_progress in self._shared_out(self._this_epoch):
                    trained = made.trained + in_progress
                    if made.handed_out_all and trained == made.handed_out:
                        # Trained in full, completed or not yet (the framework's epoch end
                        # may come after a validation starts): past its end.
                        after_last_trained = made.position
                        continue
                    return self.cursor.normalised(made.start.epoch, made.start.batch + trained)
            return self.cursor.position if after_last_trained is None else after_last_trained

    def reset(self) -> None:
        """The framework threw away its passes (after building the model): none of them
        completes, and one that completed as it handed out its last batch is taken back."""
        with self._lock:
            for open_pass in self._open:
                open_pass.discard()
            for made in self._since_epoch_end:
                if self._take_back(made):
                    _log.debug(
                        "kloader: a pass from epoch %d, batch %d, pulled to its end and thrown away "
                        "(a model built from it): the pass does not complete",
                        *made.start,
                    )
            self._since_epoch_end.clear()
            self._forget_finished()

    def close(self) -> None:
        """The framework's call is over: its passes hand out nothing more, now or later
        (a tf.data prefetch thread may go on pulling after the call returned). A pass it
        trained only part of leaves the cursor after its last trained batch."""
        with self._lock:
            self.closed = True
            self._settle_what_was_trained()
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

    def _settle_what_was_trained(self) -> None:
        """At the call's end, when the framework said what it trained: passes trained in full
        complete (a `stop_training` at an epoch's last batch leaves before the epoch's end),
        and the cursor moves to where the first pass not trained in full was left."""
        if not self._counted:
            return
        for made in self._in_training:
            if made.discarded:
                continue
            if made.handed_out_all and made.trained == made.handed_out:
                made.complete()
                continue
            cut = made
            break
        else:
            return
        if cut.trained == 0 and not cut.completed:
            return
        # Batches of an epoch stopped in the middle do not count: it is trained again.
        trained = max(0, cut.trained - self._stopped_batches)
        # Unless the cursor was moved since (set_epoch, load_state_dict): then it stays.
        where_this_pass_left_it = (cut.start, cut.position) if cut.completed else (cut.start,)
        if self.cursor.advance_from_any(
            where_this_pass_left_it, (cut.start.epoch, cut.start.batch + trained)
        ):
            _log.debug(
                "kloader: the call ended %d batches into a pass from epoch %d, batch %d%s",
                cut.trained,
                *cut.start,
                ", stopped: the next call trains that epoch again" if self._stopped_batches else "",
            )

    def _forget_finished(self) -> None:
        self._open = [p for p in self._open if not (p.completed or p.discarded)]

    @property
    def open_passes(self) -> int:
        """Started passes that may still complete."""
        return len(self._open)
