"""Pins: the Keras behaviours kloader relies on or works around, checked on the current backend.

If one of these fails after a Keras upgrade, kloader's epoch tracking or worker
lifetime needs a look before anything else (see kloader/_keras/internals.py).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras.src.trainers.data_adapters import get_data_adapter
from keras.src.trainers.epoch_iterator import EpochIterator

import kloader
from kloader._keras import internals

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
    where a Loader refuses the fit arguments Keras would silently ignore for it."""
    assert "self.data_adapter.num_batches" in inspect.getsource(EpochIterator.__init__)
    loader = kloader.Loader(IdDataset(8), batch_size=4)
    with pytest.raises(ValueError, match="`y` was passed"):
        EpochIterator(loader, y=np.zeros(8))


def test_epoch_iterator_ends_epochs_and_throws_iterators_away_in_these_methods() -> None:
    """A Loader tells an epoch the model went through (the end of `_enumerate_iterator`,
    or `catch_stop_iteration` when the data ran out) from an iterator thrown away
    (`reset`, after building the model) by the EpochIterator method calling its
    `on_epoch_end`; `on_epoch_begin` comes from `_enumerate_iterator`."""
    ends = {
        name
        for name in ("reset", "_enumerate_iterator", "catch_stop_iteration")
        if "self.data_adapter.on_epoch_end()" in inspect.getsource(getattr(EpochIterator, name))
    }
    assert ends == {"reset", "_enumerate_iterator", "catch_stop_iteration"}
    assert "self.data_adapter.on_epoch_begin()" in inspect.getsource(EpochIterator._enumerate_iterator)
    assert internals.RESET == "reset"
    assert set(internals.EPOCH_ENDS) == {"_enumerate_iterator", "catch_stop_iteration"}


class HookCallers(kloader.Loader):
    """Records which EpochIterator method calls each hook."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str | None]] = []

    def _record(self, hook: str) -> None:
        found = internals.epoch_iterator_above(sys._getframe(2))
        self.calls.append((hook, None if found is None else found[1]))

    def on_epoch_begin(self) -> None:
        self._record("begin")
        super().on_epoch_begin()

    def on_epoch_end(self) -> None:
        self._record("end")
        super().on_epoch_end()


def test_every_hook_is_called_by_an_epoch_iterator_method_kloader_knows() -> None:
    """Through a real fit on an unbuilt model, every on_epoch_begin / on_epoch_end comes from
    an EpochIterator method that kloader reads: a build pass is reset, epochs end."""
    loader = HookCallers(IdDataset(8), batch_size=4, seed=0)
    id_model(IdRecorder(), built=False).fit(loader, epochs=2, verbose=0)
    known = {"_enumerate_iterator", "catch_stop_iteration", "reset"}
    assert all(method in known for _, method in loader.calls), loader.calls
    natural_ends = [c for c in loader.calls if c[0] == "end" and c[1] in internals.EPOCH_ENDS]
    assert len(natural_ends) == 2


def test_fit_evaluate_and_predict_keep_a_callback_list_named_callbacks() -> None:
    """A Loader ends its Keras call (and stops its workers) from a callback that it adds to
    the CallbackList the call keeps in its local `callbacks`; it tells one call from the
    next by the EpochIterator the call keeps in its local `epoch_iterator`. It empties the
    copy of the locals that reading them leaves on the frame (internals.call_local), which
    is safe as long as the call itself never reads that copy through `locals()`."""
    for call in (keras.Model.fit, keras.Model.evaluate, keras.Model.predict):
        source = inspect.getsource(call)
        assert "callbacks = callbacks_module.CallbackList(" in source, call.__qualname__
        assert "epoch_iterator = " in source, call.__qualname__  # the call's own EpochIterator
        assert "locals()" not in source, call.__qualname__
    assert internals.KERAS_CALLS == {
        "fit": "on_train_end",
        "evaluate": "on_test_end",
        "predict": "on_predict_end",
    }


def test_callback_lists_shut_their_thread_pool_down_in_del_before_keras_3_12() -> None:
    """tests/conftest.py lets one unraisable-exception warning through, where Keras has
    `CallbackList.__del__`: it shuts the list's thread pool down in whichever thread drops
    the last reference, one of the pool's own included ("cannot join current thread").
    Keras 3.12 shuts the pool down when the call ends instead, and the filter is off."""
    major_minor = tuple(int(part) for part in keras.__version__.split(".")[:2])
    has_del = "__del__" in vars(keras.callbacks.CallbackList)
    assert has_del == (major_minor < (3, 12))
    if has_del:
        assert "self._executor.shutdown(" in inspect.getsource(keras.callbacks.CallbackList.__del__)


def test_fit_shows_epoch_sync_its_training_data_and_how_it_validates() -> None:
    """EpochSync tells the training loader from a validation loader by fit's EpochIterator
    (whose data adapter a Loader is), and places a validation loader from fit's
    `validation_steps` and `validation_freq` (Keras's params hold neither). Keras's
    evaluate restarts its iterator at every validation (so a validation shorter than the
    loader never completes an epoch), and validates after the epochs its `_should_eval` says."""
    train = kloader.Loader(IdDataset(8), batch_size=4)
    validation = kloader.Loader(IdDataset(8), batch_size=4)
    seen: list[Any] = []

    class Look(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            seen.append(internals.fit_validation(sys._getframe()))

    id_model(IdRecorder()).fit(
        train, validation_data=validation, validation_steps=1, validation_freq=[2], epochs=1,
        verbose=0, callbacks=[Look()],
    )  # fmt: skip
    assert seen == [internals.FitValidation(training_data=train, steps=1, freq=[2])]
    assert {"validation_steps", "validation_freq"} <= set(inspect.signature(keras.Model.fit).parameters)
    assert "epoch_iterator.reset()" in inspect.getsource(keras.Model.evaluate)
    model = id_model(IdRecorder())
    for freq in (1, 2, 3, [1, 4], [2, 3, 5]):
        for epoch in range(7):
            validated = sum(model._should_eval(before, freq) for before in range(epoch))
            assert internals.FitValidation(None, None, freq).validations_before(epoch) == validated


def test_on_train_batch_end_gets_the_step_index_that_kloader_counts_from() -> None:
    """A fit that ends in the middle of a loader epoch leaves the loader after the batches it
    trained, counted from `on_train_batch_end(batch)`: with one step per execution, `batch`
    is the step's index in the epoch. With several, Keras >= 3.11 passes the execution's last
    step (its EpochIterator yields (begin_step, end_step, data)) and older Keras its first,
    which kloader cannot count from (internals.reports_end_steps)."""
    seen: list[int] = []

    class Steps(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            seen.append(batch)

    loader = kloader.Loader(IdDataset(20), batch_size=4, seed=0)
    recorder = IdRecorder()
    model = id_model(recorder)
    model.fit(loader, epochs=1, verbose=0, callbacks=[Steps()])
    assert seen == [0, 1, 2, 3, 4]
    assert internals.steps_trained(model, seen[-1], 0) == 5
    if keras.backend.backend() == "torch":
        return  # torch runs one step per execution only
    seen.clear()
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    model.fit(loader, epochs=1, verbose=0, callbacks=[Steps()])
    # The last execution's end is counted past the data's end: kloader counts at most the
    # batches a pass handed out.
    assert seen == ([1, 3, 5] if internals.reports_end_steps() else [0, 2, 4])
    assert internals.steps_trained(model, seen[-1], 0) == (6 if internals.reports_end_steps() else None)


class CountPasses(kloader.Loader):
    """Counts the iterators Keras asks for."""

    requested = 0

    def get_jax_iterator(self) -> Any:
        self.requested += 1
        return super().get_jax_iterator()

    def get_torch_dataloader(self) -> Any:
        self.requested += 1
        return super().get_torch_dataloader()


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
    assert internals.RAN_OUT in inspect.getsource(EpochIterator._interrupted_warning)


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


def test_backup_and_restore_privates_kloader_relies_on(tmp_path: Path) -> None:
    """kloader.BackupAndRestore overrides Keras's `_save_model`, sets `_current_epoch` (the
    epoch Keras saves) and writes the loader's position into `_training_metadata_path`,
    the file Keras restores together with the weights (`.bkp` with double_checkpoint)."""
    source = inspect.getsource(keras.callbacks.BackupAndRestore)
    assert "def _save_model(self)" in source
    assert '"epoch": self._current_epoch' in source
    assert "self._prev_training_metadata_path" in source
    assert "file_utils.copy(self._prev_weights_path, self._weights_path)" in source
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    assert internals.backup_metadata_path(backup) == str(tmp_path / "training_metadata.json")
