"""The cursor: where a loader's next pass starts, as (epoch, batch).

One rule lives here and nowhere else: a position past the last batch of an
epoch is the first batch of the next epoch. Everything that moves a loader —
`set_epoch`, `load_state_dict`, a pass finishing its epoch, a Keras callback
resuming mid-epoch — moves its cursor, under the cursor's lock.
"""

from __future__ import annotations

import threading
from typing import NamedTuple


class Position(NamedTuple):
    """Batch `batch` of epoch `epoch`."""

    epoch: int
    batch: int


class Cursor:
    """Where the next pass starts, for epochs of `batches_per_epoch` batches.

    Args:
        batches_per_epoch: batches in every epoch (at least 1).

    Example:
        ```python
        cursor = Cursor(batches_per_epoch=3)
        cursor.jump_to(0, 3)  # past the last batch of epoch 0
        assert cursor.position == (1, 0)
        ```
    """

    def __init__(self, batches_per_epoch: int):
        if batches_per_epoch < 1:
            raise ValueError(f"An epoch needs at least one batch, got {batches_per_epoch}.")
        self.batches_per_epoch = batches_per_epoch
        self._position = Position(0, 0)
        self._lock = threading.Lock()

    @property
    def position(self) -> Position:
        with self._lock:
            return self._position

    def normalised(self, epoch: int, batch: int) -> Position:
        """The position (epoch, batch) names, with batches past an epoch's end carried into later epochs."""
        extra_epochs, batch = divmod(batch, self.batches_per_epoch)
        return Position(epoch + extra_epochs, batch)

    def after(self, position: Position) -> Position:
        """The position that follows `position`."""
        return self.normalised(position.epoch, position.batch + 1)

    def jump_to(self, epoch: int, batch: int) -> None:
        """The next pass starts at (epoch, batch), whatever passes are in progress."""
        with self._lock:
            self._position = self.normalised(epoch, batch)

    def advance(self, start: Position, end: Position) -> bool:
        """Moves the cursor from `start` to `end` if nobody moved it since `start` was read.

        A pass that read the cursor at `start` and finished at `end` calls this:
        a `set_epoch` or `load_state_dict` made meanwhile wins. Returns whether
        the cursor moved.
        """
        return self.advance_from_any((start,), end)

    def advance_from_any(self, starts: tuple[Position, ...], end: tuple[int, int]) -> bool:
        """`advance`, from whichever of `starts` the cursor is at (a pass that may or may not
        have moved it already). Returns whether the cursor moved."""
        with self._lock:
            if self._position not in starts:
                return False
            self._position = self.normalised(*end)
            return True
