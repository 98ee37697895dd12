"""Pins: the Keras behaviours kloader relies on or works around, checked on the current backend.

If one of these fails after a Keras upgrade, kloader's epoch tracking or worker
lifetime needs a look before anything else (see kloader/_keras_compat.py).
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras.src.trainers.data_adapters import get_data_adapter
from keras.src.trainers.epoch_iterator import EpochIterator

import kloader

from keras_utils import IdRecorder, StopAt, id_model
from utils import IdDataset, id_arrays


def test_keras_uses_a_loader_as_its_own_data_adapter() -> None:
    """get_data_adapter returns a DataAdapter unchanged: Keras iterates the Loader
    through its own methods (no enqueuer, no shuffle of batch indices)."""
    loader = kloader.Loader(IdDataset(8), batch_size=4)
    assert get_data_adapter(loader, shuffle=True) is loader


class CallOrder(keras.utils.PyDataset):
    """A textbook PyDataset that remembers which batch indices Keras asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        self.asked.append(index)
        return np.full((2, 2), index, np.float32), np.full((2,), index, np.float32)


def test_fit_shuffle_reorders_a_plain_pydatasets_batches() -> None:
    """fit(shuffle=True), the default, calls a PyDataset's __getitem__ out of order —
    why a Loader does not let Keras pick its batch indices."""
    dataset = CallOrder()
    id_model(IdRecorder()).fit(dataset, epochs=1, verbose=0)
    last_epoch = dataset.asked[-20:]
    assert sorted(last_epoch) == list(range(20)) and last_epoch != list(range(20))


class NoGetitem(kloader.Loader):
    def __getitem__(self, index: int) -> Any:
        raise AssertionError("Keras called Loader.__getitem__")


def test_keras_never_calls_a_loaders_getitem() -> None:
    """fit, evaluate and predict never call __getitem__ (tensorflow's signature peek included)."""
    loader = NoGetitem(IdDataset(12), batch_size=4, seed=0)
    model = id_model(IdRecorder())
    model.fit(
        loader, epochs=2, validation_data=NoGetitem(IdDataset(8), batch_size=4, shuffle=False), verbose=0
    )
    model.evaluate(loader, verbose=0)
    model.predict(NoGetitem(id_arrays(8)[0], batch_size=4, shuffle=False), verbose=0)


def test_epoch_iterator_reads_num_batches_while_it_is_built() -> None:
    """Keras's EpochIterator reads the adapter's num_batches in its constructor: that is
    how a Loader learns that a Keras call began (and stops its workers when it ends)."""
    assert "self.data_adapter.num_batches" in inspect.getsource(EpochIterator.__init__)
    loader = kloader.Loader(IdDataset(8), batch_size=4)
    iterator = EpochIterator(loader)
    assert loader._keras_calls.open == 1
    del iterator
    assert loader._keras_calls.open == 0


class CountPasses(kloader.Loader):
    """Counts the iterators Keras asks for and the batches it pulls before epoch 0."""

    requested = 0

    def _keras_pass(self, **options: Any) -> Any:
        self.requested += 1
        return super()._keras_pass(**options)


@pytest.mark.backend("jax", "torch")
def test_jax_and_torch_pull_a_batch_to_build_the_model() -> None:
    """On jax and torch an unbuilt model takes one batch from an extra iterator before
    epoch 0; then Keras asks for an iterator at the start of each epoch and for
    another at its end, while still holding the finished one (the moment a Loader
    completes the epoch), and drops that one unused: E epochs request 2E + 1."""
    loader = CountPasses(IdDataset(8), batch_size=4, seed=0)
    id_model(IdRecorder(), built=False).fit(loader, epochs=3, verbose=0)
    assert loader.requested == 2 * 3 + 1
    assert loader.epoch == 3


def test_keras_warns_in_these_words_when_an_epoch_runs_out() -> None:
    """kloader.BackupAndRestore silences this warning for a resumed epoch, by its text."""
    assert "Your input ran out of data" in inspect.getsource(EpochIterator._interrupted_warning)


def test_keras_backup_and_restore_restarts_the_epoch_from_its_first_batch(tmp_path: Path) -> None:
    """Keras's BackupAndRestore(save_freq=N) saves mid-epoch but restarts the
    interrupted epoch from batch 0 — the batch kloader.BackupAndRestore honours."""
    backup = str(tmp_path / "backup")
    recorder = IdRecorder()
    model = id_model(recorder)
    loader = kloader.Loader(IdDataset(16), batch_size=4, shuffle=False)
    with contextlib.suppress(RuntimeError):
        model.fit(
            loader,
            epochs=2,
            verbose=0,
            callbacks=[recorder, keras.callbacks.BackupAndRestore(backup, save_freq=1), StopAt(6)],
        )
    recorder.train.clear()
    model.fit(
        loader,
        epochs=2,
        verbose=0,
        callbacks=[recorder, keras.callbacks.BackupAndRestore(backup, save_freq=1)],
    )
    assert recorder.train_ids()[0] == [0, 1, 2, 3], "epoch 1 restarted from its first batch"
    assert len(recorder.train_ids()) == 4
