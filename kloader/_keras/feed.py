"""What Keras sees of a loader: the passes each EpochIterator draws, and the calls that use it.

A Loader is its own Keras data adapter. Keras asks it for an iterator
(`get_jax_iterator`, `get_torch_dataloader`, `get_tf_dataset`, ...) and tells
it when an epoch begins and ends (`on_epoch_begin`, `on_epoch_end`), but never
says which epoch, nor whether the model trained on what it pulled. The feed
finds out who is asking — which EpochIterator, in which `fit` / `evaluate` /
`predict` — and keeps, per EpochIterator, the passes it drew
(`kloader._core.epochs.IteratorPasses`, where the rules for moving the cursor
live):

- an epoch that ends in the EpochIterator's epoch loop completes its passes;
  `reset` (after building the model) discards them, however far a read-ahead
  pulled them;
- TensorFlow's passes complete as they hand out their last batch;
- while a `fit` trains on the loader, every other EpochIterator using the
  same loader (validation, an `evaluate` from a callback) only reads: whole
  epochs at the training epoch, without moving the cursor.

The callbacks (`EpochSync`, `BackupAndRestore`) steer the feed through
`slices_epochs` and `next_pass_length`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from kloader._core.cursor import Cursor
from kloader._core.epochs import IteratorPasses, Make, loose_pass
from kloader._core.passes import Pass
from kloader._keras import internals
from kloader._keras.calls import CallKey, KerasCalls


def slices(steps: Any, length: int) -> bool:
    """Whether Keras's `steps_per_epoch=steps` cuts each loader epoch of `length` batches
    into whole slices. Then every Keras iterator must yield one loader epoch's worth of
    batches, wherever it starts, running on into the next epoch: Keras keeps one iterator
    for several of its epochs, and one that ended with its loader epoch would leave the
    next Keras epoch short (Keras then warns that the input ran out)."""
    return isinstance(steps, int) and 0 < steps < length and length % steps == 0


class KerasFeed:
    """The Keras-facing state of one loader.

    Args:
        cursor: the loader's cursor.
        calls: the Keras calls using the loader (to stop its workers after the last).
    """

    def __init__(self, cursor: Cursor, calls: KerasCalls):
        self.cursor = cursor
        self.calls = calls
        calls.on_end = self._call_ended
        calls.on_trained = self._trained
        calls.on_epoch_over = self._epoch_over
        calls.on_evaluated = self._evaluated
        # The passes of each open call's EpochIterators, closed when the call ends.
        self._passes_of_call: dict[CallKey, list[IteratorPasses]] = {}
        self._iterators: weakref.WeakKeyDictionary[Any, IteratorPasses] = weakref.WeakKeyDictionary()
        # The passes each open fit trains on (not its validation's), told what it trained.
        self._trained_by_call: dict[CallKey, IteratorPasses] = {}
        # The fit training on this loader: while it runs, other EpochIterators only read.
        self._training: CallKey | None = None
        # With Keras's steps_per_epoch cutting loader epochs into several Keras
        # epochs of equal length, every Keras iterator must yield one loader
        # epoch's worth of batches, wherever it starts (set by the callbacks,
        # see callbacks._follow_steps).
        self.slices_epochs = False
        # Set by BackupAndRestore when resuming in the middle of a Keras epoch:
        # the next pass ends where that epoch ends.
        self.next_pass_length: int | None = None
        # An error raised while tf.data made a batch, to raise in the main thread.
        self._error: Exception | None = None
        self._quiet: internals.RanOutSilenced | None = None
        self._error_lock = threading.Lock()  # tf.data's thread sets the error, a call's end drops it

    def jump_to(self, epoch: int, batch: int) -> None:
        """The next pass starts at batch `batch` of `epoch` (past the last batch: the next epoch)."""
        self.cursor.jump_to(epoch, batch)

    # ------------------------------------------------------------ passes

    def new_pass(self, asking: FrameType | None, make: Make) -> Pass:
        """A pass for the EpochIterator running in the frames above `asking` (if any)."""
        return self._new_pass(self._passes(asking), make)

    def tensorflow_pass_maker(self, asking: FrameType | None, make: Make) -> Callable[[], Iterator[Any]]:
        """For TensorFlow, which makes passes in its own threads: a function making the
        passes of the EpochIterator that builds the dataset now (above `asking`)."""
        passes = self._passes(asking, tensorflow=True)
        feed = weakref.ref(self)

        def new_pass() -> Iterator[Any]:
            owner = feed()
            if owner is None:
                raise RuntimeError("The kloader.Loader of this dataset was garbage collected.")
            tensorflow_pass = owner._new_pass(passes, make)
            del owner
            try:
                yield from tensorflow_pass
            except Exception as error:
                # Raised in tf.data's thread, it would reach the user as a
                # tf.errors.UnknownError. Keep it, end the pass, and raise it
                # as it is when Keras ends the epoch (in the main thread).
                owner = feed()
                if owner is not None:
                    owner._failed(error, tensorflow_pass)

        return new_pass

    def _failed(self, error: Exception, made: Pass) -> None:
        with self._error_lock:
            # A closed pass's call has ended (it left through Ctrl-C, whose SIGINT also
            # stopped the workers this batch waited for): its error is no one's.
            if self._error is None and made.is_open():
                self._error = error
                # Keras will warn that the input ran out just before it ends the
                # epoch, where the error is raised: the error says what happened.
                self._quiet = internals.RanOutSilenced()

    def _drop_error(self) -> Exception | None:
        with self._error_lock:
            error, self._error = self._error, None
            if self._quiet is not None:
                self._quiet.stop()
                self._quiet = None
        return error

    def _new_pass(self, passes: IteratorPasses | None, make: Make) -> Pass:
        length, self.next_pass_length = self.next_pass_length, None
        if length is None and self.slices_epochs:
            length = self.cursor.batches_per_epoch
        if passes is None:
            return loose_pass(self.cursor, make, length=length)
        return passes.new_pass(make, length=length)

    # ------------------------------------------------------- epoch hooks

    def epoch_begins(self, asking: FrameType | None) -> None:
        self._passes(asking)

    def epoch_ends(self, asking: FrameType | None) -> None:
        error = self._drop_error()
        if error is not None:
            raise error
        found = internals.epoch_iterator_above(asking)
        if found is None:
            return
        epoch_iterator, method = found
        passes = self._iterators.get(epoch_iterator)
        if passes is None:
            return
        if method == internals.RESET:
            passes.reset()
        elif method in internals.EPOCH_ENDS:
            passes.epoch_ended()

    # ------------------------------------------------------------ lookup

    def _passes(self, asking: FrameType | None, *, tensorflow: bool = False) -> IteratorPasses | None:
        """The passes of the EpochIterator above `asking`, registering it (and its call) when new."""
        found = internals.epoch_iterator_above(asking)
        if found is None:
            return None
        epoch_iterator, _ = found
        call = internals.outermost_keras_call(asking)
        passes = self._iterators.get(epoch_iterator)
        if passes is None:
            # Decided before this call is counted as open: a fit that ended may
            # have left its key (frame ids are reused) to the call starting now. A
            # fit that left through an exception is ended first: the watcher may not
            # have seen it yet, and a fit retried at once would only read, never
            # training an epoch.
            if self._training is not None and self.calls.is_open(self._training):
                current = None if call is None else self.calls.key_of(call, epoch_iterator)
                self.calls.end_calls_gone_from_this_thread(current)
            reads_only = self._training is not None and self.calls.is_open(self._training)
            training = self._trained_by_call.get(self._training) if self._training and reads_only else None
            passes = IteratorPasses(
                self.cursor, completes_on_last=tensorflow, reads_only=reads_only, reads_beside=training
            )
            self._iterators[epoch_iterator] = passes
            # fit's own EpochIterator (TensorFlow asks while building it, before fit holds
            # it); not the one it validates with, nor one of an evaluate or predict that a
            # callback runs on another loader: those read this loader, they do not train it.
            if (
                call is not None
                and not reads_only
                and call.f_code.co_name == "fit"
                and internals.call_epoch_iterator(call) in (None, epoch_iterator)
            ):
                self._training = self.calls.key_of(call, epoch_iterator)
                # A fit that starts in the middle of a loader epoch (a second fit) takes one
                # iterator for several Keras epochs: see `slices`.
                self.slices_epochs = slices(
                    internals.call_local(call, "steps_per_epoch"), self.cursor.batches_per_epoch
                )
                self._trained_by_call[self._training] = passes
        if call is not None:
            key = self.calls.seen(call, epoch_iterator)
            of_call = self._passes_of_call.setdefault(key, [])
            if passes not in of_call:
                of_call.append(passes)
        return passes

    def _trained(self, key: CallKey, batches: int) -> None:
        passes = self._trained_by_call.get(key)
        if passes is not None:
            passes.training(batches)

    def _epoch_over(self, key: CallKey, stopped: bool) -> None:
        passes = self._trained_by_call.get(key)
        if passes is not None:
            passes.epoch_trained(stopped=stopped)

    def _evaluated(self, key: CallKey, batches: int) -> None:
        training = self._trained_by_call.get(key)
        for passes in self._passes_of_call.get(key, []):
            if passes is not training and not passes.reads_only:
                passes.evaluated(batches)

    def _call_ended(self, key: CallKey, cleanly: bool) -> None:
        trained = self._trained_by_call.pop(key, None)
        if trained is not None:
            self.slices_epochs = False  # for the fit that set it; an evaluate after it reads epochs
            if not cleanly:
                trained.interrupted()
        for passes in self._passes_of_call.pop(key, []):
            passes.close()
        if not self.calls.open:
            # An error tf.data's thread met making a batch, that no epoch end raised
            # because the call left first, belongs to that call, not to the next one.
            self._drop_error()
