"""The Keras fit / evaluate / predict calls using a loader, so its workers stop when the last ends.

A call is seen to begin when one of its EpochIterators first asks the loader
for an iterator or starts an epoch. It ends

- when Keras runs the call's closing callback hook (`on_train_end`,
  `on_test_end`, `on_predict_end`): the loader adds a small callback to the
  call's CallbackList for this. This covers a normal return, `stop_training`
  set mid-epoch, and `steps=` limits, on every Keras version, without waiting
  for garbage collection;
- when the EpochIterator that began it is freed (a weakref finalizer): the
  same moment, for a call whose CallbackList could not be reached. The
  finalizer runs in whatever thread the garbage collector runs in, possibly a
  thread that a worker start in progress waits for, so it only hands the call
  to the watcher thread below, which ends it; or
- when the call's frame is no longer on its thread's stack. When an exception
  (a KeyboardInterrupt, an error in a callback) leaves `fit`, no closing hook
  runs and Keras's EpochIterator is caught in a reference cycle with its own
  suspended generator. A watcher thread, running only while calls are open,
  looks at the stacks twice a second and ends such calls.
"""

from __future__ import annotations

import gc
import logging
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import keras

from kloader._keras import internals

_WATCH_INTERVAL = 0.5

# Which of the three ways ended each call, at DEBUG: a pass cut short while its
# call still runs would show up as a short epoch, and this names the trigger.
_log = logging.getLogger(__name__)

# A call: (thread id, id of the fit / evaluate / predict frame, that frame's code,
# id of the EpochIterator the call built). The frame's id alone is reused by the
# next call as soon as a call returns, while the EpochIterator of a call that
# left through an exception lives on (in a cycle) until its finalizer ends it.
CallKey = tuple[int, int, CodeType, int]


class _EndOfCall(keras.callbacks.Callback):  # type: ignore[misc]
    """Ends a call when Keras runs that call's closing hook (and only that one: the
    `evaluate` that validates inside `fit` runs `on_test_end` on fit's callbacks).

    In a `fit`, it also counts the batches each epoch trained (Keras's step index
    at each `on_train_batch_end`) and reports them as they train, and at the epoch's
    end whether a callback set `stop_training` at a batch's end, so that a `fit` that
    ends in the middle of a loader epoch leaves the loader after its last
    trained batch (or, stopped, at that epoch's start). It counts the batches
    each evaluation (an `evaluate`, or the validation inside `fit`) and each
    `predict` used in the same way, and reports them at its end: tf.data's prefetch may have pulled
    the whole epoch where `steps` / `validation_steps` used less. With
    `steps_per_execution` > 1 older Keras reports the first step of each
    execution: then no batch is counted.
    """

    def __init__(self, hook: str, calls: KerasCalls, key: CallKey):
        super().__init__()
        self._hook = hook
        # The callback lives in the user's CallbackList for as long as Keras keeps it:
        # it must not keep the loader (and its workers) alive.
        self._calls = weakref.ref(calls)
        self._key = key
        self._steps: int | None = 0
        self._stopped = False
        self._tested: int | None = 0
        # The CallbackList this callback is in (set by internals.add_callback).
        self.keras_callbacks: Callable[[], Any] = _nothing

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        # self._model, not self.model: on JAX that property syncs the model's state.
        model = getattr(self, "_model", None)
        if self._steps is None:
            return
        steps = internals.steps_trained(model, batch, self._steps)
        calls = self._calls()
        if self._hook == "on_train_end" and calls is not None and steps is not None and steps > self._steps:
            # Reported as they train: an evaluation of the loader being trained, from a
            # callback or as fit's validation, reads the epoch they reached.
            calls.on_trained(self._key, steps - self._steps)
        self._steps = steps
        # Set by a callback at this batch's end (they run before this one): Keras leaves the
        # epoch. At the epoch's last step, the epoch was trained in full: not a stop in its middle.
        if getattr(model, "stop_training", False) and not self._at_last_step():
            self._stopped = True

    def _at_last_step(self) -> bool:
        params = getattr(self, "params", None) or {}
        return self._steps == params.get("steps")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self._steps is None:
            return
        calls = self._calls()
        if self._hook == "on_train_end" and calls is not None:
            calls.on_epoch_over(self._key, self._stopped)
        self._steps = 0

    def _closing(self, hook: str) -> None:
        calls = self._calls()
        if hook == self._hook and calls is not None:
            calls._end(self._key, "Keras ran its closing callback hook", cleanly=True)

    def on_test_begin(self, logs: Any = None) -> None:
        self._tested = 0
        if self._hook == "on_train_end":
            # fit's validation: it reads the epoch the trained batches reached, all of them
            # counted (Keras may still be running the last batch ends in its thread pool).
            internals.finish_batch_ends(self.keras_callbacks())

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        if self._tested is not None:
            self._tested = internals.steps_trained(getattr(self, "_model", None), batch, self._tested)

    def on_train_end(self, logs: Any = None) -> None:
        self._closing("on_train_end")

    def _evaluation_ends(self, hook: str) -> None:
        calls = self._calls()
        if self._tested is not None and calls is not None:
            calls.on_evaluated(self._key, self._tested)
        self._closing(hook)

    def on_test_end(self, logs: Any = None) -> None:
        self._evaluation_ends("on_test_end")

    # A prediction uses its passes as an evaluation does: counted the same way.
    def on_predict_begin(self, logs: Any = None) -> None:
        self._tested = 0

    on_predict_batch_end = on_test_batch_end

    def on_predict_end(self, logs: Any = None) -> None:
        self._evaluation_ends("on_predict_end")


class KerasCalls:
    """Open Keras calls of one loader; runs `on_end(call)` as each ends and `on_last_end`
    when none is left."""

    def __init__(self, on_last_end: Callable[[], None]):
        self._on_last_end = on_last_end
        # Runs with whether the call ended cleanly (Keras ran its closing hook), not
        # through an exception.
        self.on_end: Callable[[CallKey, bool], None] = _ignore
        self.on_trained: Callable[[CallKey, int], None] = _ignore_counted
        self.on_epoch_over: Callable[[CallKey, bool], None] = _ignore_epoch_over
        self.on_evaluated: Callable[[CallKey, int], None] = _ignore_counted
        self._lock = threading.Lock()
        self._open: dict[CallKey, bool] = {}  # call -> whether its closing callback is in place
        # Held through a call's whole end, its last (the workers stopping) included, and
        # while a call begins: a call that begins as the last one ends (on the watcher
        # thread) waits for that end, and never uses the workers it is stopping.
        self._ending = threading.RLock()

    def seen(self, call: FrameType, epoch_iterator: Any) -> CallKey:
        """`epoch_iterator`, working for the Keras `call`, used the loader: the call is open."""
        with self._ending:
            return self._seen(call, epoch_iterator)

    def _seen(self, call: FrameType, epoch_iterator: Any) -> CallKey:
        built = _built_epoch_iterator(call, epoch_iterator)
        key = _key(call, built)
        with self._lock:
            known, hooked = key in self._open, self._open.get(key, False)
            if not known:
                self._open[key] = False
        if not known:
            _watcher.watch(self)  # before the finalizer can hand it a call
            weakref.finalize(built, _watcher.end_later, self, key)
        if not hooked:
            hook = internals.KERAS_CALLS[call.f_code.co_name]
            if internals.add_callback(call, _EndOfCall(hook, self, key)):
                with self._lock:
                    if key in self._open:
                        self._open[key] = True
        return key

    @staticmethod
    def key_of(call: FrameType, epoch_iterator: Any) -> CallKey:
        return _key(call, _built_epoch_iterator(call, epoch_iterator))

    def is_open(self, key: CallKey) -> bool:
        return key in self._open

    def _end(self, key: CallKey, why: str, *, cleanly: bool = False) -> None:
        with self._ending:
            with self._lock:
                if self._open.pop(key, None) is None:
                    return
                last = not self._open
            _log.debug("kloader: the Keras %s call using this loader ended: %s", key[2].co_name, why)
            self.on_end(key, cleanly)
            if last:
                self._on_last_end()

    def end_calls_gone_from_this_thread(self, current: CallKey | None) -> None:
        """Ends, now, the calls that left through an exception, which the watcher would end
        within half a second: calls whose EpochIterator was freed, and this thread's calls
        no longer on its stack. A call that begins on this thread meanwhile (`current`, a
        retry after a crash) must not take such a call for one still running. The frame
        of a call that left may have been freed and its address reused by `current`'s:
        that call is gone too, as `current` built another EpochIterator."""
        _watcher.end_handed_over()
        this_thread, stack = threading.get_ident(), sys._getframe()
        with self._ending:  # and an end in progress on the watcher thread has finished
            with self._lock:
                calls = [key for key in self._open if key[0] == this_thread and key != current]
            for key in calls:
                reused = current is not None and key[1:3] == current[1:3]
                if reused or not _on_stack(stack, key[1], key[2]):
                    self._end(
                        key, "its frame is no longer on its thread's stack (seen as the next call began)"
                    )

    @property
    def open(self) -> int:
        return len(self._open)

    def finished(self, stacks: dict[int, FrameType]) -> list[CallKey]:
        """The open calls whose function is no longer on its thread's stack."""
        with self._lock:
            calls = list(self._open)
        return [key for key in calls if not _on_stack(stacks.get(key[0]), key[1], key[2])]


def _built_epoch_iterator(call: FrameType, epoch_iterator: Any) -> Any:
    # Until `call` has assigned its EpochIterator (TensorFlow asks for the
    # dataset inside the EpochIterator's constructor), the asking one is it.
    return internals.call_epoch_iterator(call) or epoch_iterator


def _key(call: FrameType, built: Any) -> CallKey:
    return (threading.get_ident(), id(call), call.f_code, id(built))


def _nothing() -> None:
    return None


def _ignore_counted(key: CallKey, batches: int) -> None:
    pass


def _ignore_epoch_over(key: CallKey, stopped: bool) -> None:
    pass


def _ignore(key: CallKey, cleanly: bool) -> None:
    pass


def _on_stack(frame: FrameType | None, frame_id: int, code: CodeType) -> bool:
    while frame is not None:
        if id(frame) == frame_id and frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _finished_calls(watched: list[KerasCalls]) -> list[tuple[KerasCalls, list[CallKey]]]:
    stacks = sys._current_frames()
    try:
        return [(calls, calls.finished(stacks)) for calls in watched]
    finally:
        # The snapshot holds this very frame, and this frame holds the snapshot: a
        # reference cycle. Left to the garbage collector, it would keep every
        # thread's frames, and what they hold (a worker queue's semaphores in
        # /dev/shm, a batch), alive until some later collection.
        stacks.clear()


class _Watcher:
    """One daemon thread for all loaders; it runs only while some call is open."""

    def __init__(self) -> None:
        self._calls: weakref.WeakSet[KerasCalls] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        # Calls handed over by finalizers. SimpleQueue.put is safe in a finalizer:
        # it never blocks and takes no lock another thread could hold.
        self._handed_over: queue.SimpleQueue[tuple[KerasCalls, CallKey]] = queue.SimpleQueue()

    def watch(self, calls: KerasCalls) -> None:
        with self._lock:
            self._calls.add(calls)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="kloader-keras-calls", daemon=True)
                self._thread.start()

    def end_later(self, calls: KerasCalls, key: CallKey) -> None:
        """Ends `key` on the watcher thread; returns at once (for finalizers).

        Ending the last call stops the loader's workers, which waits for a start
        in progress; run inline, in a thread that start is waiting for, that
        would wait forever. The call stays open until the watcher ends it, so
        the watcher runs until then.
        """
        if calls.is_open(key):
            self._handed_over.put((calls, key))
            self._wake.set()

    def end_handed_over(self) -> None:
        while True:
            try:
                calls, key = self._handed_over.get_nowait()
            except queue.Empty:
                return
            calls._end(key, "its EpochIterator was freed")

    def _run(self) -> None:
        while True:
            self._wake.wait(_WATCH_INTERVAL)
            self._wake.clear()
            self.end_handed_over()
            with self._lock:
                watched = [calls for calls in self._calls if calls.open]
                if not watched:
                    self._thread = None
                    return
            finished = [(calls, ended) for calls, ended in _finished_calls(watched) if ended]
            if finished:
                # The call left through an exception, and Keras's EpochIterator
                # sits in a reference cycle with the last batches (shared
                # memory) and queue semaphores. Collecting it frees all of that
                # now rather than at some later collection.
                gc.collect()
                for calls, ended in finished:
                    for key in ended:
                        calls._end(key, "its frame is no longer on its thread's stack")


_watcher = _Watcher()
