"""The epoch guarantee under every way Keras reads ahead of the model, on CPU.

Keras's JAX trainer pulls batches ahead of the model: 2 ahead in Keras
3.8-3.13, 1 ahead in 3.14, and in 3.15 1 ahead on every GPU / TPU (the plain
iterator only when `jax.default_backend() == "cpu"`). These tests put the
EpochIterator of the current backend onto those paths on a CPU — Keras's own
one-batch-ahead iterator where this Keras has it (the accelerator branch), and
a 2-deep prefetch like older Keras's — and check, through real fits, which
samples the model received. A read-ahead that exhausts a short epoch while the
model is being built is exactly what used to shift every epoch by one.
"""

from __future__ import annotations

import itertools
import warnings
from collections import deque
from collections.abc import Iterator
from typing import Any

import keras
import pytest

import kloader

from keras_utils import EpochLengths, IdRecorder, id_model, keras_epochs
from utils import IdDataset, assert_labels, expected_labels, jitter_label, workers_up

pytestmark = pytest.mark.backend("jax", "torch")


def epoch_iterator_class() -> Any:
    if keras.backend.backend() == "jax":
        from keras.src.backend.jax.trainer import JAXEpochIterator

        return JAXEpochIterator
    from keras.src.backend.torch.trainer import TorchEpochIterator

    return TorchEpochIterator


def prefetch(batches: Any, depth: int) -> Iterator[Any]:
    """Older Keras's JAX prefetch: `depth` batches pulled ahead of the consumer."""
    iterator = iter(batches)
    queue: deque[Any] = deque(itertools.islice(iterator, depth))
    for batch in iterator:
        queue.append(batch)
        yield queue.popleft()
    yield from queue


@pytest.fixture(params=["accelerator_branch", "prefetch_2"])
def read_ahead(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Puts the backend's EpochIterator on a read-ahead path for the test."""
    cls = epoch_iterator_class()
    plain = cls._get_iterator
    if request.param == "accelerator_branch":
        if hasattr(cls, "_one_batch_ahead_iterator"):  # Keras >= 3.14 on jax: its own code

            def get_iterator(self: Any) -> Any:
                return self._one_batch_ahead_iterator(plain(self))
        else:

            def get_iterator(self: Any) -> Any:
                return prefetch(plain(self), 1)
    else:

        def get_iterator(self: Any) -> Any:
            return prefetch(plain(self), 2)

    monkeypatch.setattr(cls, "_get_iterator", get_iterator)
    return str(request.param)


@pytest.mark.parametrize("samples", [4, 8, 20])  # 1, 2 and 5 batches of 4
@pytest.mark.parametrize("built", [True, False])
def test_fit_trains_loader_epochs_in_order_under_read_ahead(
    read_ahead: str, samples: int, built: bool
) -> None:
    """fit(epochs=3) trains loader epochs 0, 1, 2 and leaves the loader at epoch 3, for
    1-, 2- and 5-batch epochs, built or unbuilt models; a second fit continues."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(samples), batch_size=4, seed=3, transform=jitter_label)
    model = id_model(recorder, built=built)
    model.fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    assert loader.epoch == 3
    model.fit(loader, epochs=1, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 4))
    assert loader.epoch == 4


def test_fit_with_workers_under_read_ahead(read_ahead: str) -> None:
    """The same with 2 worker processes, which stop when fit returns."""
    recorder = IdRecorder()
    loader = workers_up(
        kloader.Loader(IdDataset(6), batch_size=4, seed=8, transform=jitter_label, num_workers=2)
    )
    id_model(recorder, built=False).fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    assert_labels(recorder.train, expected_labels(loader, 3))
    assert loader.epoch == 3
    assert loader.worker_pids == []


def test_steps_per_epoch_under_read_ahead(read_ahead: str) -> None:
    """steps_per_epoch=2 over 4-batch loader epochs: Keras epochs are consecutive halves."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(16), batch_size=4, seed=5, transform=jitter_label)
    id_model(recorder, built=False).fit(
        loader, epochs=4, steps_per_epoch=2, verbose=0, callbacks=[recorder, kloader.EpochSync(loader)]
    )
    assert_labels(recorder.train, expected_labels(loader, 2))
    assert loader.epoch == 2


@pytest.mark.parametrize("initial_epoch", [1, 2])
def test_steps_per_epoch_that_do_not_divide_the_loader_under_read_ahead(
    read_ahead: str, initial_epoch: int
) -> None:
    """7 batches in Keras epochs of 3 (3, 3, 1), started in the middle of a loader epoch and on
    its short slice: each Keras epoch trains on the uninterrupted run's batches for it."""
    recorder, lengths = IdRecorder(), EpochLengths()
    loader = kloader.Loader(IdDataset(28), batch_size=4, seed=3)
    expected = keras_epochs(loader, 3, 7)[initial_epoch:]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        id_model(recorder, built=False).fit(
            loader, epochs=7, initial_epoch=initial_epoch, steps_per_epoch=3, verbose=0,
            callbacks=[recorder, lengths, kloader.EpochSync(loader)],
        )  # fmt: skip
    assert recorder.train_ids() == [batch for epoch in expected for batch in epoch]
    assert lengths.lengths == [len(epoch) for epoch in expected]


def test_validation_on_the_training_loader_does_not_move_its_epoch(read_ahead: str) -> None:
    """The same loader as data and validation_data: epoch e still trains on loader epoch e."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(8), batch_size=4, seed=2, transform=jitter_label)
    id_model(recorder, built=False).fit(
        loader, epochs=3, validation_data=loader, verbose=0, callbacks=[recorder]
    )
    assert_labels(recorder.train, expected_labels(loader, 3))
    assert loader.epoch == 3
    assert len(recorder.test) == 3 * 2
