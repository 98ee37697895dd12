"""Which batches go to the workers, which are out with them, and which came back early.

A pure bookkeeping object: no processes, no locks, no torch. The pool asks it
what to send next, tells it what came back, and tells it which batches were
made elsewhere (in the main process while the workers start). It follows the
loader's *plan*: the tasks expected next, running on past the end of an epoch
into the next one, so workers stay busy across the epoch boundary. When a
batch is asked for that the plan did not foresee (a resume, `set_epoch`, Keras
discarding a pass), the plan restarts at that batch; results already in flight
are kept for a while in case they are asked for later.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

Key = tuple[int, int, int]


class Task(NamedTuple):
    """One batch to make: the sample `indices` of batch `batch` of `epoch` under `seed`."""

    seed: int
    epoch: int
    batch: int
    indices: np.ndarray

    @property
    def key(self) -> Key:
        return (self.seed, self.epoch, self.batch)


class Plan:
    """The order in which tasks go out, and what is out and back.

    Args:
        plan_from: `plan_from(task)` yields the tasks expected from `task` on, forever.
        keep: at most this many results that arrived before they were asked
            for are kept (the oldest are dropped first).
    """

    def __init__(self, plan_from: Callable[[Task], Iterator[Task]], *, keep: int):
        self._plan_from = plan_from
        self._keep = keep
        self._upcoming: Iterator[Task] = iter(())
        self._in_flight: deque[Key] = deque()  # sent, not received, in the order sent
        self._ready: OrderedDict[Key, Any] = OrderedDict()
        # In flight, but made elsewhere since: dropped when they arrive.
        self._unwanted: set[Key] = set()

    def continue_from(self, task: Task) -> None:
        """The next task to send is `task` (unless it is out already), then its successors."""
        self._upcoming = self._plan_from(task)

    def continue_after(self, task: Task) -> None:
        """`task` was made elsewhere: send its successors, and drop it if it comes back."""
        self._upcoming = self._plan_from(task)
        next(self._upcoming)
        self._ready.pop(task.key, None)
        if task.key in self._in_flight:
            self._unwanted.add(task.key)

    def is_coming(self, key: Key) -> bool:
        """True when `key` was sent, will come back, and is wanted."""
        return key in self._in_flight and key not in self._unwanted

    def is_unwanted(self, key: Key) -> bool:
        return key in self._unwanted

    @property
    def unwanted(self) -> list[Key]:
        """Keys in flight that will be dropped on arrival."""
        return sorted(self._unwanted)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def take(self, key: Key) -> tuple[bool, Any]:
        """(True, batch) when `key` came back early, else (False, None)."""
        if key in self._ready:
            return True, self._ready.pop(key)
        return False, None

    def next_to_send(self) -> Task:
        """The next planned task that is neither out nor back already; marks it out."""
        while True:
            task = next(self._upcoming)
            if task.key not in self._in_flight and task.key not in self._ready:
                self._in_flight.append(task.key)
                return task

    def receive(self, key: Key, batch: Any, *, wanted: Key | None) -> bool:
        """Records that `key` came back; True when it is `wanted` (the caller keeps it).

        Anything else is kept for later (a bounded number), unless it was made
        elsewhere meanwhile. A batch of None is a task a worker skipped.
        """
        self._in_flight.remove(key)
        if key in self._unwanted:
            if key not in self._in_flight:
                self._unwanted.discard(key)
            return False
        if key == wanted:
            return True
        if batch is None:  # skipped by a worker: nothing to keep
            return False
        self._ready[key] = batch
        while len(self._ready) > self._keep:
            self._ready.popitem(last=False)
        return False

    def clear(self) -> None:
        """Forgets everything: nothing out, nothing back, nothing planned."""
        self._upcoming = iter(())
        self._in_flight.clear()
        self._ready.clear()
        self._unwanted.clear()
