"""A pass: one run through the rest of an epoch, starting at the loader's cursor.

The loader's cursor (epoch, batch) says where the next pass starts. Who moves
it, and when, is the whole of kloader's epoch tracking:

- A pass from `iter(loader)` moves the cursor after every batch it hands out,
  so `loader.state_dict()` taken after any batch restores exactly the rest.
- A pass Keras iterates never moves the cursor mid-epoch: Keras pulls one batch
  to build the model (on jax and torch) and throws that pass away, and some
  backends pull ahead of what the model has trained on. It *completes* its
  epoch, moving the cursor to (epoch + 1, 0), when
    1. it is pulled past its last batch (it is exhausted), or
    2. Keras asks for the next pass while this one is still held and has
       handed out all its batches (jax and torch never pull past the end;
       the pass thrown away after building the model is no longer held), or
    3. it hands out its last batch, for TensorFlow, whose passes are never
       thrown away and whose prefetching may not reach the end before Keras
       lets go of the iterator.
- Either way the cursor moves only if nobody moved it since the pass began
  (`set_epoch` or `load_state_dict` win over a pass in progress).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kloader._keras.loader import Loader


class Pass:
    """An iterator over batches from the loader's cursor: to the end of that epoch, or,
    when `whole_epoch_of_batches`, for one epoch's worth of batches running on into the
    next epoch (what Keras expects of each iterator when `steps_per_epoch` slices
    epochs, in a run resumed in the middle of one), or exactly `length` batches."""

    def __init__(
        self,
        loader: Loader,
        *,
        moves_cursor: bool,
        complete_on_last: bool = False,
        whole_epoch_of_batches: bool = False,
        length: int | None = None,
        make: Callable[[int, int], Any] | None = None,
    ):
        self._loader = loader
        # What the pass hands out for (epoch, batch): the batch, or what stands for it.
        self._make = make if make is not None else loader._batch
        self._moves_cursor = moves_cursor
        self._complete_on_last = complete_on_last
        self._whole_epoch_of_batches = whole_epoch_of_batches
        self._length = length
        self.started = False
        self.start = (0, 0)
        self.position = (0, 0)
        self.remaining = 0
        self.completed = False
        self.failed = False

    @property
    def handed_out_all(self) -> bool:
        return self.started and self.remaining == 0

    def __iter__(self) -> Pass:
        return self

    def __next__(self) -> Any:
        if not self.started:
            self.start = self.position = self._loader._cursor_position()
            size = len(self._loader)
            if self._length is not None:
                self.remaining = self._length
            else:
                self.remaining = size if self._whole_epoch_of_batches else size - self.start[1]
            self.started = True
        if self.failed:
            # After an error the pass is over: a framework that keeps pulling
            # (tf.data's prefetch thread) must not start workers again.
            raise StopIteration
        if self.remaining == 0:
            self.complete()
            raise StopIteration
        epoch, batch = self.position
        try:
            made = self._make(epoch, batch)
        except BaseException:
            self.failed = True
            raise
        self.remaining -= 1
        self.position = (epoch, batch + 1) if batch + 1 < len(self._loader) else (epoch + 1, 0)
        if self._moves_cursor:
            self._loader._move_cursor(from_position=(epoch, batch), to_position=self.position)
        elif self._complete_on_last and self.handed_out_all:
            self.complete()
        return made

    def complete(self) -> None:
        """Marks the pass done: the cursor moves past its last batch unless it was moved."""
        if self.completed or not self.started:
            return
        self.completed = True
        if not self._moves_cursor:
            self._loader._move_cursor(from_position=self.start, to_position=self.position)
