"""The Keras fit / evaluate / predict calls using a loader, so its workers stop when the last ends.

A Keras call builds an EpochIterator, which reads the loader's `num_batches` in
its constructor: that is where a call is seen to begin. It ends

- when the EpochIterator is freed, which, when the call returns normally,
  happens as the call returns (a weakref finalizer); or
- when the function that built it is no longer on its thread's stack. When an
  exception (a KeyboardInterrupt, an error in a callback) leaves `fit`, Keras's
  EpochIterator is caught in a reference cycle with its own suspended
  generator and would be freed only by some later garbage collection. A
  watcher thread, running only while calls are open, looks at the stacks
  twice a second and ends such calls.
"""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

_WATCH_INTERVAL = 0.5


class KerasCalls:
    """Open Keras calls of one loader; runs `on_last_end` when none is left."""

    def __init__(self, on_last_end: Callable[[], None]):
        self._on_last_end = on_last_end
        self._lock = threading.Lock()
        self._open: dict[int, tuple[int, int, CodeType]] = {}
        self._next_id = 0

    def begin(self, epoch_iterator: Any, caller: FrameType | None) -> None:
        """A Keras call starts: `epoch_iterator` is its EpochIterator, `caller` the frame that built it."""
        with self._lock:
            call = self._next_id
            self._next_id += 1
            if caller is not None:
                self._open[call] = (threading.get_ident(), id(caller), caller.f_code)
            else:
                self._open[call] = (threading.get_ident(), 0, _NO_CODE)
        weakref.finalize(epoch_iterator, self._end, call)
        _watcher.watch(self)

    def _end(self, call: int) -> None:
        with self._lock:
            if self._open.pop(call, None) is None or self._open:
                return
        self._on_last_end()

    @property
    def open(self) -> int:
        return len(self._open)

    def finished(self, stacks: dict[int, FrameType]) -> list[int]:
        """The open calls whose function is no longer on its thread's stack."""
        with self._lock:
            calls = list(self._open.items())
        return [
            call
            for call, (thread, frame_id, code) in calls
            if code is not _NO_CODE and not _on_stack(stacks.get(thread), frame_id, code)
        ]


_NO_CODE = compile("", "<none>", "exec")


def _on_stack(frame: FrameType | None, frame_id: int, code: CodeType) -> bool:
    while frame is not None:
        if id(frame) == frame_id and frame.f_code is code:
            return True
        frame = frame.f_back
    return False


class _Watcher:
    """One daemon thread for all loaders; it runs only while some call is open."""

    def __init__(self) -> None:
        self._calls: weakref.WeakSet[KerasCalls] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def watch(self, calls: KerasCalls) -> None:
        with self._lock:
            self._calls.add(calls)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="kloader-keras-calls", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(_WATCH_INTERVAL)
            stacks = sys._current_frames()
            with self._lock:
                watched = [calls for calls in self._calls if calls.open]
                if not watched:
                    self._thread = None
                    return
            finished = [(calls, calls.finished(stacks)) for calls in watched]
            del stacks
            finished = [(calls, ended) for calls, ended in finished if ended]
            if finished:
                # The call left through an exception, and Keras's EpochIterator
                # sits in a reference cycle with the last batches (shared
                # memory) and queue semaphores. Collecting it runs its
                # finalizer, which ends the call and stops the workers, and
                # frees all of that now rather than at some later collection.
                gc.collect()
                for calls, ended in finished:
                    for call in ended:
                        calls._end(call)


_watcher = _Watcher()
