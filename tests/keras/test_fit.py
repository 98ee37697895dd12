"""The guarantee, through real Keras: what the model receives in fit / evaluate / predict.

Each test runs a real model on the current backend (tox runs this file once
per backend) and records the labels the compiled train step actually got.
Labels are sample ids, jittered by a seeded transform, so both the order and
the augmentation are checked bit for bit.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import kloader

from keras_utils import IdRecorder, StopTrainingAt, first_feature_model, id_model
from utils import (
    IdDataset,
    assert_labels,
    expected_labels,
    id_arrays,
    jitter_label,
    wait_until_a_worker_is_up,
)

# Frozen: the ids seed 42 gives IdDataset(10) in batches of 4, epochs 0-2. The
# same list is asserted on every backend, so it proves they agree.
GOLDEN_IDS = [
    [5, 0, 7, 6],
    [2, 1, 9, 8],
    [4, 3],
    [0, 1, 5, 2],
    [8, 7, 3, 4],
    [9, 6],
    [8, 7, 4, 9],
    [5, 6, 0, 1],
    [2, 3],
]


@pytest.mark.parametrize("num_workers", [0, 1, 2, 4])
def test_fit_trains_on_kloaders_order(num_workers: int) -> None:
    """3 epochs of fit: each epoch a permutation, epochs differ, exactly kloader's
    order and augmentation, for any num_workers and on every backend (golden)."""
    recorder = IdRecorder()
    loader = kloader.Loader(
        IdDataset(10), batch_size=4, seed=42, transform=jitter_label, num_workers=num_workers
    )
    id_model(recorder, built=False).fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    assert recorder.train_ids() == GOLDEN_IDS
    assert_labels(recorder.train, expected_labels(loader, 3))
    epochs = [sorted(i for batch in GOLDEN_IDS[3 * e : 3 * e + 3] for i in batch) for e in range(3)]
    assert all(epoch == list(range(10)) for epoch in epochs)
    assert loader.epoch == 3


def test_repeated_runs_train_identically() -> None:
    """Two runs with the same seed train on the same sequence, with workers."""
    runs = []
    for _ in range(2):
        recorder = IdRecorder()
        loader = kloader.Loader(IdDataset(23), batch_size=5, seed=7, transform=jitter_label, num_workers=2)
        id_model(recorder).fit(loader, epochs=2, verbose=0, callbacks=[recorder])
        runs.append(recorder.train)
    assert_labels(runs[0], runs[1])


def test_fit_shuffle_flag_does_not_reorder_batches() -> None:
    """fit(shuffle=True), Keras's default, reorders PyDataset batches; not a Loader's."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(40), batch_size=4, seed=3, transform=jitter_label)
    id_model(recorder).fit(loader, epochs=2, shuffle=True, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 2))


def test_single_batch_epochs() -> None:
    """With one batch per epoch, the batch Keras pulls to build the model does not
    count as an epoch: epoch e still trains on epoch e."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(4), batch_size=4, seed=5, transform=jitter_label)
    id_model(recorder, built=False).fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 3))


def test_validation_and_evaluate_see_source_order() -> None:
    """validation_data and evaluate with shuffle=False see every sample in source order."""
    recorder = IdRecorder()
    train = kloader.Loader(IdDataset(12), batch_size=4, seed=1)
    validation = kloader.Loader(IdDataset(7), batch_size=3, shuffle=False, num_workers=2)
    model = id_model(recorder)
    model.fit(train, validation_data=validation, epochs=2, verbose=0, callbacks=[recorder])
    source_order = [[0, 1, 2], [3, 4, 5], [6]]
    assert recorder.test_ids() == source_order * 2
    assert [i for batch in recorder.train_ids() for i in batch] == [
        i for e in range(2) for b in range(3) for i in train.indices(b, e).tolist()
    ]
    recorder.test.clear()
    model.evaluate(validation, verbose=0, callbacks=[recorder])
    assert recorder.test_ids() == source_order
    assert validation.worker_pids == []


@pytest.mark.parametrize("num_workers", [0, 2])
def test_predict_rows_line_up_with_the_source(num_workers: int) -> None:
    """predict on an unbuilt model returns one row per sample, in source order."""
    loader = kloader.Loader(id_arrays(11)[0], batch_size=4, shuffle=False, num_workers=num_workers)
    predictions = first_feature_model().predict(loader, verbose=0)
    assert predictions.ravel().tolist() == list(range(11))
    assert loader.worker_pids == []


def test_steps_per_epoch_slices_the_loader_epoch() -> None:
    """steps_per_epoch smaller than the loader: Keras epochs take consecutive
    slices of one loader epoch, then move to the next loader epoch."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(24), batch_size=4, seed=9, transform=jitter_label)
    id_model(recorder).fit(loader, epochs=4, steps_per_epoch=3, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 2))
    assert loader.epoch == 2


def test_second_fit_continues_with_the_next_epochs() -> None:
    """A second fit on the same loader trains on the epochs after the first fit's."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(9), batch_size=4, seed=2, transform=jitter_label, num_workers=2)
    model = id_model(recorder)
    model.fit(loader, epochs=2, verbose=0, callbacks=[recorder])
    model.fit(loader, epochs=1, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 3))
    assert loader.epoch == 3


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fits_of_fewer_steps_than_an_epoch_go_on_where_the_last_stopped(num_workers: int) -> None:
    """fit(epochs=1, steps_per_epoch=3) in a loop over a 7-batch loader epoch: each call trains
    the next 3 batches (the one that reaches the epoch's end, its last 1), never the same ones
    again, and the loader stands after the last batch trained, on every backend (TensorFlow's
    prefetch once moved it to the next epoch, the others left it at batch 0)."""
    recorder = IdRecorder()
    loader = kloader.Loader(
        IdDataset(27), batch_size=4, seed=5, transform=jitter_label, num_workers=num_workers
    )
    model = id_model(recorder)
    positions = []
    for _ in range(4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Keras: the input ran out (the epoch's last slice)
            model.fit(loader, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[recorder])
        positions.append((loader.epoch, loader.state_dict()["batch"]))
    assert positions == [(0, 3), (0, 6), (1, 0), (1, 3)]
    assert_labels(recorder.train, expected_labels(loader, 2)[:10])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_second_fit_from_the_middle_of_an_epoch_with_steps_that_divide_it(num_workers: int) -> None:
    """fit(epochs=1, steps_per_epoch=2) on a 4-batch loader leaves it at batch 2; then
    fit(epochs=3, steps_per_epoch=2) trains the 6 batches that follow. Before, Keras's one
    iterator for several epochs ended with the loader epoch: the second Keras epoch was
    empty ("ran out"), and two batches were never trained. Then evaluate reads an epoch."""
    recorder = IdRecorder()
    loader = kloader.Loader(
        IdDataset(16), batch_size=4, seed=5, transform=jitter_label, num_workers=num_workers
    )
    model = id_model(recorder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras's "ran out" would fail the test
        model.fit(loader, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[recorder])
        history = model.fit(loader, epochs=3, steps_per_epoch=2, verbose=0, callbacks=[recorder])
    assert len(history.history["loss"]) == 3
    assert_labels(recorder.train, expected_labels(loader, 2))
    assert (loader.epoch, loader.state_dict()["batch"]) == (2, 0)
    loader.load_state_dict(loader.state_at(2, 2))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        model.evaluate(loader, verbose=0, callbacks=[recorder])  # the rest of epoch 2, not into epoch 3
    assert [ids.tolist() for ids in recorder.test] == [b.tolist() for b in expected_labels(loader, 3)[10:12]]


@pytest.mark.parametrize("stop_after", [3, 5])
def test_a_fit_stopped_mid_epoch_leaves_the_loader_at_that_epochs_start(stop_after: int) -> None:
    """stop_training after 3 of 5 batches: the loader stays at epoch 0, batch 0, and the next
    fit trains epoch 0 in full, on every backend (TensorFlow's prefetch could move it on to
    epoch 1, skipping batches 3 and 4). Stopped at the epoch's last batch, it moves on."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(20), batch_size=4, seed=8, transform=jitter_label, num_workers=2)
    model = id_model(recorder)
    model.fit(loader, epochs=2, verbose=0, callbacks=[recorder, StopTrainingAt(stop_after)])
    expected = expected_labels(loader, 2)
    assert (loader.epoch, loader.state_dict()["batch"]) == ((0, 0) if stop_after < 5 else (1, 0))
    model.fit(loader, epochs=1, verbose=0, callbacks=[recorder])
    again = expected[:5] if stop_after < 5 else expected[5:10]
    assert_labels(recorder.train, expected[:stop_after] + again)


@pytest.mark.parametrize("stop_after", [4, 5, 6])
def test_a_fit_stopped_in_a_keras_epoch_shorter_than_the_loader_trains_that_keras_epoch_again(
    stop_after: int,
) -> None:
    """steps_per_epoch=3 on a 7-batch loader: Keras epoch 1 is batches 3-5 of loader epoch 0.
    stop_training after 1 or 2 of them leaves the loader at batch 3, not at batch 0: the
    next fit trains Keras epoch 1 again, not the Keras epoch before it that was trained
    in full. Stopped at Keras epoch 1's last batch, the loader stands after it."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(28), batch_size=4, seed=8, transform=jitter_label, num_workers=2)
    model = id_model(recorder)
    expected = expected_labels(loader, 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        model.fit(
            loader, epochs=3, steps_per_epoch=3, verbose=0, callbacks=[recorder, StopTrainingAt(stop_after)]
        )
        resumes_at = 3 if stop_after < 6 else 6
        assert (loader.epoch, loader.state_dict()["batch"]) == (0, resumes_at)
        model.fit(loader, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected[:stop_after] + expected[resumes_at : resumes_at + 3])


def test_workers_live_through_fit_and_stop_after() -> None:
    """Workers start once per fit, serve every epoch, and are gone when fit returns."""

    seen: list[list[int]] = []

    class Pids(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            seen.append(loader.worker_pids)

    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(16), batch_size=4, seed=0, num_workers=2)
    id_model(recorder).fit(loader, epochs=3, verbose=0, callbacks=[recorder, Pids()])
    assert len(seen[0]) == 2 and seen == [seen[0]] * 3
    assert loader.worker_pids == []


@pytest.mark.parametrize("argument", ["y", "sample_weight", "class_weight"])
def test_arguments_keras_would_drop_are_refused(argument: str) -> None:
    """y / sample_weight / class_weight next to a Loader raise instead of being ignored."""
    loader = kloader.Loader(IdDataset(8), batch_size=4)
    value = {"y": np.zeros(8), "sample_weight": np.ones(8), "class_weight": {0: 1.0}}[argument]
    with pytest.raises(ValueError, match=f"`{argument}` was passed to fit together"):
        id_model(IdRecorder()).fit(loader, verbose=0, **{argument: value})


# Arrays without a transform take another road: batches are gathered in this
# process (jax, torch) or, on TensorFlow, by tf.data from the sample indices the
# loader hands out. The same guarantees hold.


def ids_of_epochs(loader: kloader.Loader, epochs: range) -> list[list[int]]:
    return [loader.indices(b, e).tolist() for e in epochs for b in range(len(loader))]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fit_on_arrays_trains_on_kloaders_order(num_workers: int) -> None:
    recorder = IdRecorder()
    loader = kloader.Loader(id_arrays(10), batch_size=4, seed=42, num_workers=num_workers)
    id_model(recorder, built=False).fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    assert recorder.train_ids() == GOLDEN_IDS
    assert loader.epoch == 3


def test_arrays_steps_per_epoch_and_a_second_fit() -> None:
    recorder = IdRecorder()
    loader = kloader.Loader(id_arrays(24), batch_size=4, seed=9)
    model = id_model(recorder)
    model.fit(loader, epochs=4, steps_per_epoch=3, verbose=0, callbacks=[recorder])
    assert loader.epoch == 2
    model.fit(loader, epochs=1, verbose=0, callbacks=[recorder])
    assert recorder.train_ids() == ids_of_epochs(loader, range(3))
    assert loader.epoch == 3


def test_arrays_validation_and_evaluate_see_source_order() -> None:
    recorder = IdRecorder()
    train = kloader.Loader(id_arrays(12), batch_size=4, seed=1)
    validation = kloader.Loader(id_arrays(7), batch_size=3, shuffle=False)
    model = id_model(recorder)
    model.fit(train, validation_data=validation, epochs=2, verbose=0, callbacks=[recorder])
    assert recorder.test_ids() == [[0, 1, 2], [3, 4, 5], [6]] * 2
    assert recorder.train_ids() == ids_of_epochs(train, range(2))
    recorder.test.clear()
    model.evaluate(validation, verbose=0, callbacks=[recorder])
    assert recorder.test_ids() == [[0, 1, 2], [3, 4, 5], [6]]


def test_fit_trains_on_intact_batches_while_buffers_are_reused() -> None:
    """Through a real fit on the current backend, every batch the model trains on is
    the loader's while the workers recycle their buffers all along: a worker that
    rewrote a batch still waiting in a queue, in the loader or in TensorFlow's
    prefetch would fail this."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(400), batch_size=4, seed=4, transform=jitter_label, num_workers=2)
    next(iter(loader))  # made here: the workers start, and make fit's batches once up
    wait_until_a_worker_is_up(loader)
    loader.set_epoch(0)
    id_model(recorder).fit(loader, epochs=2, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 2))
    reused = loader._pool.buffers_reused if loader._pool is not None else 0
    assert reused >= 100, f"the workers reused {reused} buffers: too few for this test to test anything"
