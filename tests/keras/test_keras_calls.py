"""What a Keras call leaves behind, on every backend: workers, the loader's epoch, its errors."""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import sys
import threading
import time
import warnings
import weakref
from typing import Any

import keras
import numpy as np
import pytest

import kloader
from kloader._keras.calls import KerasCalls

from keras_utils import IdRecorder, StopAt, StopTrainingAt, first_feature_model, id_model
from utils import IdDataset, assert_labels, expected_labels, jitter, jitter_label


def workers_loader(samples: int = 40, *, shuffle: bool = True) -> kloader.Loader:
    return kloader.Loader(
        IdDataset(samples), batch_size=4, seed=1, shuffle=shuffle, transform=jitter_label, num_workers=2
    )


def test_workers_are_gone_when_fit_returns() -> None:
    """No garbage collection, no waiting: the workers stop as fit returns."""
    loader = workers_loader()
    id_model(IdRecorder()).fit(loader, epochs=2, verbose=0)
    assert loader.worker_pids == []


def test_workers_are_gone_when_fit_is_stopped_mid_epoch() -> None:
    """stop_training set in the middle of an epoch: the workers stop as fit returns."""
    loader = workers_loader()
    id_model(IdRecorder()).fit(loader, epochs=3, verbose=0, callbacks=[StopTrainingAt(3)])
    assert loader.worker_pids == []


@pytest.mark.parametrize("call", ["evaluate", "predict"])
def test_workers_are_gone_after_a_steps_limit(call: str) -> None:
    """evaluate / predict with steps= shorter than the loader: workers stop as the call returns."""
    loader = workers_loader(shuffle=False)  # predict warns about a shuffling loader
    getattr(id_model(IdRecorder()), call)(loader, steps=2, verbose=0)
    assert loader.worker_pids == []


def test_one_loader_for_training_and_validation_keeps_the_training_epochs() -> None:
    """validation_data=the training loader: epoch e trains on loader epoch e, and each
    validation reads all of the epoch being trained, without moving it."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(12), batch_size=4, seed=6, transform=jitter_label)
    id_model(recorder).fit(loader, epochs=3, validation_data=loader, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 3))
    assert loader.epoch == 3
    validated = sorted(np.concatenate(recorder.test[:3]).round().astype(int).tolist())
    assert validated == list(range(12))


class SlowAsyncBatchEnd(keras.callbacks.Callback):
    """A batch-end callback that says it is safe to run in Keras's thread pool, and is slow:
    on JAX and torch, Keras then runs every callback's `on_train_batch_end` in a thread, and
    waits for them only at the epoch's end, after the validation has started."""

    async_safe = True

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        time.sleep(0.05)


def test_validation_on_the_training_loader_reads_the_next_epoch_though_keras_runs_batch_ends_late() -> None:
    """validation_data=the training loader reads loader epoch e + 1 after Keras epoch e, also
    when Keras runs the batch ends in its thread pool: the validation waits for them. It read
    the epoch just trained when the last batch's end had not run yet (about one run in three
    on torch with no callback of the user's, every run with this slow one)."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(12), batch_size=4, seed=6, transform=jitter_label)
    id_model(recorder).fit(
        loader, epochs=3, validation_data=loader, verbose=0, callbacks=[recorder, SlowAsyncBatchEnd()]
    )
    epochs = expected_labels(loader, 4)  # 3 batches each
    assert_labels(recorder.train, epochs[:9])
    assert_labels(recorder.test, epochs[3:12])


@pytest.mark.filterwarnings("ignore:Your input ran out of data:UserWarning")
def test_one_loader_for_training_and_validation_with_steps_per_epoch_validates_the_epoch_trained() -> None:
    """steps_per_epoch=2 on a 5-batch loader, validation_data=the loader: Keras epochs 0 and 1
    train in loader epoch 0, so their validations read loader epoch 0; epoch 2 ends loader
    epoch 0, and the validations after it read epoch 1. On every backend: TensorFlow's
    prefetch reaching the end of loader epoch 0 during Keras epoch 1 made its validation
    read epoch 1."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(20), batch_size=4, seed=6, transform=jitter_label)
    id_model(recorder).fit(
        loader, epochs=4, steps_per_epoch=2, validation_data=loader, verbose=0, callbacks=[recorder]
    )
    epochs = expected_labels(loader, 2)  # 5 batches each
    assert_labels(recorder.train, epochs[:7])
    assert_labels(recorder.test, epochs[:5] * 2 + epochs[5:] * 2)


class EvaluateEachEpoch(keras.callbacks.Callback):
    """Evaluates the model on `loader` at the end of every epoch (recorded as test batches)."""

    def __init__(self, loader: kloader.Loader, recorder: IdRecorder):
        super().__init__()
        self.loader = loader
        self.recorder = recorder

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.model.evaluate(self.loader, verbose=0, callbacks=[self.recorder])


def test_evaluate_from_a_callback_does_not_move_the_training_epoch() -> None:
    """model.evaluate(training loader) inside fit: the training epochs stay 0, 1, 2."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(8), batch_size=4, seed=9, transform=jitter_label)
    id_model(recorder).fit(
        loader, epochs=3, verbose=0, callbacks=[recorder, EvaluateEachEpoch(loader, recorder)]
    )
    assert_labels(recorder.train, expected_labels(loader, 3))
    assert loader.epoch == 3
    assert len(recorder.test) == 3 * 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_evaluation_of_another_loader_from_a_callback_reads_its_next_epoch_each_time(
    num_workers: int,
) -> None:
    """model.evaluate(other) and a predict of it at every epoch's end, inside fit: each full
    evaluation completes one of other's epochs, as outside fit. (The second and later
    evaluations in a fit read one epoch again: the loader took them for a validation of the
    loader being trained.)"""
    recorder = IdRecorder()
    train = kloader.Loader(IdDataset(8), batch_size=4, seed=9, transform=jitter_label)
    other = kloader.Loader(
        IdDataset(12), batch_size=4, seed=3, transform=jitter_label, num_workers=num_workers
    )
    predicted: list[int] = []

    class EvaluateAndPredict(EvaluateEachEpoch):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            super().on_epoch_end(epoch, logs)
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="predict.. runs on a kloader.Loader with shuffle=True"
                )
                predicted.append(len(self.model.predict(other, verbose=0)))

    id_model(recorder).fit(
        train, epochs=3, verbose=0, callbacks=[recorder, EvaluateAndPredict(other, recorder)]
    )
    epochs = expected_labels(other, 5)  # 3 batches each
    # Each evaluation, then the predict after it, completes one of other's epochs.
    assert_labels(recorder.test, epochs[0:3] + epochs[6:9] + epochs[12:15])
    assert predicted == [12, 12, 12]
    assert other.epoch == 6
    assert_labels(recorder.train, expected_labels(train, 3))


@pytest.mark.parametrize("at_batch", [0, 2])
def test_evaluate_from_a_batch_end_reads_the_epoch_being_trained(at_batch: int) -> None:
    """model.evaluate(training loader) from on_train_batch_end in epoch 0 reads epoch 0, on
    every backend: at the epoch's last batch TensorFlow's prefetch has already pulled the
    pass to its end, and the evaluation read epoch 1."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(12), batch_size=4, seed=9, transform=jitter_label)

    class EvaluateOnce(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == at_batch and not recorder.test:
                self.model.evaluate(loader, verbose=0, callbacks=[recorder])

    id_model(recorder).fit(loader, epochs=2, verbose=0, callbacks=[recorder, EvaluateOnce()])
    epochs = expected_labels(loader, 2)
    assert_labels(recorder.test, epochs[:3])
    assert_labels(recorder.train, epochs)


class VariableLength:
    """Sample i: a (length, 1) sequence of i's, length 2, 3 or 4 by batch of 4; label i."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.float32]:
        length = 2 + (index // 4) % 3
        return np.full((length, 1), index, dtype=np.float32), np.float32(index)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_fit_retried_at_once_after_a_crash_trains_the_next_epochs(num_workers: int) -> None:
    """A fit that raised in epoch 1, then at once (a retry loop, a notebook cell run again)
    a new fit on the same loader: it trains epochs 1 and 2 and leaves the loader at epoch 3,
    as it does a second later. Before, until the watcher had seen the first fit end (up to
    a second with workers), the new fit took it for one still running, and only read:
    epoch 1 twice, the loader left at epoch 1."""
    loader = kloader.Loader(IdDataset(19), batch_size=4, seed=4, num_workers=num_workers)  # 5 batches
    with contextlib.suppress(RuntimeError):
        id_model(IdRecorder()).fit(loader, epochs=3, verbose=0, callbacks=[StopAt(7)])
    recorder = IdRecorder()
    id_model(recorder).fit(loader, epochs=2, verbose=0, callbacks=[recorder])
    assert recorder.train_ids() == [
        loader.indices(batch, epoch).tolist() for epoch in (1, 2) for batch in range(5)
    ]
    assert loader.epoch == 3
    assert loader.worker_pids == []


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("crash_after", [1, 3, 4, 5, 8, 9])
def test_a_crash_leaves_the_loader_at_the_start_of_the_epoch_it_was_in(
    num_workers: int, crash_after: int
) -> None:
    """An exception at any batch of a 5-batch epoch, in the call's first epoch or a later
    one: read at once in the `except` block, the loader stands at the start of that epoch,
    and a retry trains it in full. On TensorFlow, tf.data's prefetch pulls a short epoch's
    pass to its end (completing it) before the model has trained its last batches: before,
    a crash in one of those left the loader at the next epoch, its last batches untrained."""
    loader = kloader.Loader(IdDataset(19), batch_size=4, seed=4, num_workers=num_workers)  # 5 batches
    loader.set_epoch(1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        id_model(IdRecorder()).fit(loader, epochs=3, verbose=0, callbacks=[StopAt(crash_after)])
    crashed_in = 1 + (crash_after - 1) // 5
    assert loader.state_dict()["epoch"] == crashed_in
    assert loader.state_dict()["batch"] == 0
    recorder = IdRecorder()
    id_model(recorder).fit(loader, epochs=1, verbose=0, callbacks=[recorder])
    assert recorder.train_ids() == [loader.indices(batch, crashed_in).tolist() for batch in range(5)]
    assert loader.epoch == crashed_in + 1


def test_evaluations_of_fewer_steps_than_the_loader_leave_its_epoch() -> None:
    """evaluate(steps=3) on a 5-batch loader, five times: each reads the first 3 batches of
    the loader's epoch 0, which never completes, on every backend (on TensorFlow too, whose
    prefetch may have pulled all 5); a full evaluate then reads epoch 0 whole and completes it."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(20), batch_size=4, seed=4)
    model = id_model(recorder)
    for _ in range(5):
        model.evaluate(loader, steps=3, verbose=0, callbacks=[recorder])
        assert loader.epoch == 0
    model.evaluate(loader, verbose=0, callbacks=[recorder])
    assert loader.epoch == 1
    first = [loader.indices(batch, 0).tolist() for batch in range(5)]
    assert recorder.test_ids() == first[:3] * 5 + first


@pytest.mark.parametrize("steps", [1, 2])
def test_predictions_of_fewer_steps_than_the_loader_leave_its_epoch(steps: int) -> None:
    """predict(steps=k) on a 3-batch loader leaves it at epoch 0, also where a read-ahead
    or tf.data's prefetch pulled the pass to its end (Keras 3.10 on JAX, TensorFlow): before,
    the next fit then never trained epoch 0. A full predict reads epoch 0 and completes it."""
    loader = kloader.Loader(
        IdDataset(12), batch_size=4, shuffle=False, seed=4, num_workers=2, transform=jitter_label
    )
    model = first_feature_model()
    for _ in range(3):
        rows = model.predict(loader, steps=steps, verbose=0)
        assert rows[:, 0].round().astype(int).tolist() == list(range(4 * steps))
        assert loader.epoch == 0
    model.predict(loader, verbose=0)
    assert loader.epoch == 1


def test_samples_whose_shape_varies_from_batch_to_batch_train() -> None:
    """Batches of (4, 2, 1), (4, 3, 1), (4, 4, 1) ... train on every backend, in order."""
    recorder = IdRecorder()
    model = keras.Sequential(
        [keras.Input((None, 1)), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=recorder.loss)
    loader = kloader.Loader(VariableLength(), batch_size=4, shuffle=False)
    model.fit(loader, epochs=2, verbose=0, callbacks=[recorder])
    assert recorder.train_ids() == [list(range(b, b + 4)) for _ in range(2) for b in range(0, 24, 4)]


def fails_on_sample_5(sample: tuple[np.ndarray, Any], rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    if int(sample[1]) == 5:
        raise ValueError("sample 5 is corrupt")
    return jitter(sample, rng)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("call", ["fit", "evaluate", "predict"])
def test_a_sample_error_inside_a_keras_call_is_a_sample_error(call: str, num_workers: int) -> None:
    """On every backend (TensorFlow included) the user catches kloader.SampleError,
    whose cause is the transform's own error, also when a worker raised it (Keras
    re-raises `from None`: before, a worker's cause was lost that way)."""
    loader = kloader.Loader(
        IdDataset(16), batch_size=4, shuffle=False, transform=fails_on_sample_5, num_workers=num_workers
    )
    model = id_model(IdRecorder())
    with pytest.raises(kloader.SampleError, match="sample 5") as caught:
        getattr(model, call)(loader, verbose=0)
    assert isinstance(caught.value.__cause__, ValueError)
    assert str(caught.value.__cause__) == "sample 5 is corrupt"


def test_a_call_ended_mid_epoch_says_at_debug_level_what_ended_it(caplog: pytest.LogCaptureFixture) -> None:
    """A pass cut short while Keras still iterates would look like a short epoch ("Your input
    ran out of data"): kloader logs, at DEBUG, which trigger ended each call and which pass it
    cut short, so that such a failure names its cause (the test suite shows these logs)."""
    loader = workers_loader(samples=400)
    with caplog.at_level(logging.DEBUG, logger="kloader"):
        id_model(IdRecorder()).fit(loader, epochs=3, verbose=0, callbacks=[StopTrainingAt(2)])
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("kloader")]
    assert (
        "kloader: the Keras fit call using this loader ended: Keras ran its closing callback hook" in messages
    )
    cut = [m for m in messages if m.startswith("kloader: a pass from epoch 0, batch 0 was closed after")]
    if keras.backend.backend() == "tensorflow":
        assert len(cut) <= 1, messages  # tf.data may have prefetched all 100 batches before the stop
    else:
        assert len(cut) == 1, messages
    for message in cut:
        found = re.search(r"closed after (\d+) batches, (\d+) before its end", message)
        assert found is not None, message
        handed_out, left = int(found[1]), int(found[2])
        assert handed_out >= 2 and handed_out + left == 100
    loader.close()


# ------------------------------------------- ends that run in a finalizer


def test_a_call_ended_by_its_finalizer_ends_on_the_watcher_thread() -> None:
    """The finalizer of a call's EpochIterator runs in whatever thread the garbage collector
    runs in; ending the last call stops the workers, which waits for a start in progress (that
    thread may be one the start waits for: a hang, seen in CI). It only hands the call over."""
    ended_in: list[str] = []
    done = threading.Event()

    def on_last_end() -> None:
        ended_in.append(threading.current_thread().name)
        done.set()

    keras_calls = KerasCalls(on_last_end=on_last_end)

    class EpochIteratorStandIn:
        pass

    def fit(epoch_iterator: EpochIteratorStandIn) -> None:  # named as the Keras call it stands for
        keras_calls.seen(sys._getframe(), epoch_iterator)

    iterator = EpochIteratorStandIn()
    fit(iterator)
    del iterator  # the finalizer runs here, in this thread
    assert done.wait(30)
    assert ended_in == ["kloader-keras-calls"]


def test_the_watcher_keeps_nothing_of_other_threads_alive() -> None:
    """The watcher reads every thread's stack to see which calls ended. What it read must
    not outlive the reading: a frame kept alive keeps its locals (a worker queue's
    semaphores in /dev/shm, a batch) until some later garbage collection. Seen in CI as
    semaphores left behind by an interrupted fit."""

    class Token:
        pass

    token: list[weakref.ref[Token]] = []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        held = Token()
        token.append(weakref.ref(held))
        holding.set()
        release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait()
    gc.collect()
    gc.disable()  # what a reference cycle holds then stays until the test is over
    try:
        loader = workers_loader()
        id_model(IdRecorder()).fit(loader, epochs=2, verbose=0)
        assert loader.worker_pids == []
        deadline = time.monotonic() + 30
        while any(t.name == "kloader-keras-calls" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the watcher thread did not stop"
            time.sleep(0.05)
        release.set()
        thread.join()
        assert token[0]() is None, "the watcher kept another thread's frame alive"
    finally:
        release.set()
        gc.enable()


class EpochIteratorsFreed(keras.callbacks.Callback):
    """At the first batch of each epoch, after a garbage collection: is the iterator
    that Keras drew for each earlier epoch of this loader still alive?"""

    def __init__(self, loader: kloader.Loader):
        super().__init__()
        self.loader = loader
        self.drawn: list[weakref.ref[Any]] = []
        self.alive: list[list[bool]] = []

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if batch != 0:
            return
        from keras.src.trainers.epoch_iterator import EpochIterator

        # By type, not isinstance: that would read `__class__` on every object (lazy modules warn).
        iterators = [o for o in gc.get_objects() if issubclass(type(o), EpochIterator)]
        validation = getattr(self.model, "_eval_epoch_iterator", None)
        (training,) = [o for o in iterators if o.data_adapter is self.loader and o is not validation]
        self.drawn.append(weakref.ref(training._current_iterator))
        gc.collect()
        self.alive.append([drawn() is not None for drawn in self.drawn[:-1]])


@pytest.mark.parametrize("validation", [None, "the same loader", "another loader"])
def test_kloader_keeps_no_epoch_iterator_alive_after_keras_lets_go_of_it(validation: str | None) -> None:
    """Keras draws a fresh iterator for each epoch and lets go of the last one as the next
    epoch's first batch begins. kloader reads Keras's frames to follow its calls, and a
    read of `fit`'s local variables must not keep them: on CPython before 3.13 such a
    read leaves a snapshot of all of them on the frame. Read at every epoch, it held each
    epoch's iterator one epoch longer and then freed it inside the next epoch's hook; on
    TensorFlow, freeing a tf.data iterator there held up the epoch's first step for up to
    5 s (seen in fit epochs timed as benchmarks/run.py times them). Read once, when the
    validation data first asks (after epoch 1), it held epoch 1's iterator until fit
    returned."""
    loader = kloader.Loader(IdDataset(32), batch_size=8, seed=0)
    validation_data = {
        None: None,
        "the same loader": loader,
        "another loader": kloader.Loader(IdDataset(16), batch_size=8, shuffle=False),
    }[validation]
    freed = EpochIteratorsFreed(loader)
    id_model(IdRecorder()).fit(
        loader, validation_data=validation_data, epochs=4, verbose=0, callbacks=[freed]
    )
    assert freed.alive == [[], [False], [False, False], [False, False, False]]


class OverridesFit(keras.Sequential):
    """A model class whose fit does its own work and then calls Keras's (as many do)."""

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        self.fits = getattr(self, "fits", 0) + 1
        return super().fit(*args, **kwargs)


def test_a_model_whose_fit_calls_super_trains_in_order_and_stops_its_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kloader knows Keras's own fit by its code, and follows that call inside the model's
    own fit: trained in order, and the workers stop as fit returns (Keras's closing
    callback hook, added to the call's callbacks, not a finalizer some time later)."""
    recorder = IdRecorder()
    loader = workers_loader(samples=24)
    model = OverridesFit([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=recorder.loss)
    with caplog.at_level(logging.DEBUG, logger="kloader"):
        model.fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    ended = [r.getMessage() for r in caplog.records if "call using this loader ended" in r.getMessage()]
    assert ended == [
        "kloader: the Keras fit call using this loader ended: Keras ran its closing callback hook"
    ]
    assert model.fits == 1
    assert_labels(recorder.train, expected_labels(loader, 3))
    assert loader.epoch == 3
    assert loader.worker_pids == []
