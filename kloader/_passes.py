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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kloader._loader import Loader


class Pass:
    """An iterator over the batches from the loader's cursor to the end of that epoch."""

    def __init__(self, loader: Loader, *, moves_cursor: bool, complete_on_last: bool = False):
        self._loader = loader
        self._moves_cursor = moves_cursor
        self._complete_on_last = complete_on_last
        self.started = False
        self.epoch = 0
        self.start = 0
        self.next = 0
        self.completed = False
        self.failed = False

    @property
    def handed_out_all(self) -> bool:
        return self.started and self.next >= len(self._loader)

    def __iter__(self) -> Pass:
        return self

    def __next__(self) -> Any:
        if not self.started:
            self.epoch, self.start = self._loader._cursor_position()
            self.next = self.start
            self.started = True
        if self.failed:
            # After an error the pass is over: a framework that keeps pulling
            # (tf.data's prefetch thread) must not start workers again.
            raise StopIteration
        if self.next >= len(self._loader):
            self.complete()
            raise StopIteration
        try:
            batch = self._loader._batch(self.epoch, self.next)
        except BaseException:
            self.failed = True
            raise
        self.next += 1
        if self._moves_cursor:
            self._loader._move_cursor(
                from_position=(self.epoch, self.next - 1), to_position=(self.epoch, self.next)
            )
        elif self._complete_on_last and self.handed_out_all:
            self.complete()
        return batch

    def complete(self) -> None:
        """Marks the epoch done: the cursor goes to (epoch + 1, 0) unless it was moved."""
        if self.completed or not self.started:
            return
        self.completed = True
        if not self._moves_cursor:
            self._loader._move_cursor(from_position=(self.epoch, self.start), to_position=(self.epoch + 1, 0))
