"""The edge cases that need real Keras: arguments Keras would drop, predict order, TF_CONFIG shards.

The backend-independent edge cases are in tests/core/test_edge_cases.py.
"""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest

import kloader

from keras_utils import first_feature_model
from utils import IdDataset, id_arrays


def dense_model() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_fit_with_batch_size_and_a_loader_is_refused() -> None:
    """fit(loader, batch_size=16) would train on the loader's batches of 4 without a word: refused."""
    loader = kloader.Loader(IdDataset(12), batch_size=4, seed=0)
    with pytest.raises(
        ValueError, match=r"`batch_size=16`.*Keras would ignore it.*kloader.Loader\(source, batch_size"
    ):
        dense_model().fit(loader, batch_size=16, epochs=1, verbose=0)


@pytest.mark.parametrize("call", ["evaluate", "predict"])
def test_batch_size_is_refused_in_the_name_of_the_call(call: str) -> None:
    loader = kloader.Loader(IdDataset(12), batch_size=4, shuffle=False, seed=0)
    with pytest.raises(ValueError, match=rf"`batch_size=16` was passed to {call} together"):
        getattr(dense_model(), call)(loader, batch_size=16, verbose=0)


def test_validation_batch_size_with_a_validation_loader_is_refused_by_its_name() -> None:
    """Before, the message named `batch_size`, which the user had not passed."""
    x, y = id_arrays(12)
    validation = kloader.Loader(IdDataset(8), batch_size=4, shuffle=False, seed=0)
    with pytest.raises(
        ValueError,
        match=r"`validation_batch_size=2` was passed to fit together.*leave validation_batch_size out",
    ):
        dense_model().fit(x, y, validation_data=validation, validation_batch_size=2, epochs=1, verbose=0)


def test_fit_on_arrays_with_batch_size_and_a_loader_for_validation_is_accepted() -> None:
    """batch_size meant for the training arrays is not held against a validation loader."""
    x, y = id_arrays(12)
    validation = kloader.Loader(IdDataset(8), batch_size=4, shuffle=False, seed=0)
    history = dense_model().fit(x, y, batch_size=6, validation_data=validation, epochs=1, verbose=0)
    assert "val_loss" in history.history


def test_predict_on_a_shuffling_loader_warns_once() -> None:
    """predict returns rows in the loader's shuffled order: a warning says so, once per loader."""
    loader = kloader.Loader(id_arrays(10)[0], batch_size=4, seed=1)
    model = first_feature_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = model.predict(loader, verbose=0)
        model.predict(loader, verbose=0)
    messages = [str(w.message) for w in caught if "shuffle=True" in str(w.message)]
    assert len(messages) == 1 and "shuffle=False" in messages[0]
    order = np.concatenate([loader.indices(b, 0) for b in range(len(loader))])
    assert first.ravel().tolist() == order.tolist()


def test_predict_on_a_sharded_loader_warns_that_its_rows_are_one_shard() -> None:
    """A loader of one shard of two (shard="auto" under torchrun) predicts its shard's rows only:
    a warning says so, even without shuffling; the rows are the shard's, batch by batch."""
    loader = kloader.Loader(id_arrays(10)[0], batch_size=2, shuffle=False, shard=(1, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = first_feature_model().predict(loader, verbose=0)
    assert any("reads shard 1 of 2: its rows are this process's shard only" in str(w.message) for w in caught)
    assert rows.ravel().tolist() == [int(i) for b in range(len(loader)) for i in loader.indices(b)]


def test_predict_on_an_unshuffled_loader_does_not_warn() -> None:
    """Source order: nothing to warn about (the suite turns any warning into an error)."""
    loader = kloader.Loader(id_arrays(10)[0], batch_size=4, shuffle=False, seed=1)
    assert first_feature_model().predict(loader, verbose=0).ravel().tolist() == list(range(10))


@pytest.mark.backend("tensorflow")
@pytest.mark.parametrize(
    "config",
    ['[{"type": "worker"}]', '{"cluster": ["localhost:1", "localhost:2"], "task": {}}', '{"task": 3}'],
)
def test_tf_config_of_another_shape_is_refused_with_the_shape_it_needs(
    monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(ValueError, match=r"TF_CONFIG must be a JSON object .*cluster.*task"):
        kloader.Loader(IdDataset(12), batch_size=2, seed=1)


@pytest.mark.backend("tensorflow")
@pytest.mark.parametrize("task", [{"type": "worker", "index": 2}, {"type": "chief", "index": 1}])
def test_tf_config_task_outside_the_cluster_is_refused(monkeypatch: pytest.MonkeyPatch, task: dict) -> None:
    """A TF_CONFIG task index outside the cluster is refused, as an explicit bad shard is."""
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2", "localhost:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    with pytest.raises(
        ValueError, match=rf"{task['type']} {task['index']}.*task.index must be an int from 0"
    ):
        kloader.Loader(IdDataset(12), batch_size=2, seed=1)
