"""Keras-side test helpers: a recorder of the samples a model actually receives."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


class IdRecorder(keras.callbacks.Callback):
    """Records the labels of every batch a compiled model trains or evaluates on.

    Use `recorder.loss` as the model's loss: it hands `y_true` to Python from
    inside the compiled step (jax.debug.callback on jax, tf.numpy_function on
    tensorflow, directly on torch), so what is recorded is what the model got.
    Training batches go to `train`, evaluation and validation batches to
    `test`. Calls outside on_*_begin / on_*_end are ignored: torch's model
    building calls the loss on placeholder tensors first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.train: list[np.ndarray] = []
        self.test: list[np.ndarray] = []
        self._modes: list[list[np.ndarray]] = []

    def _record(self, y_true: Any) -> None:
        if self._modes:
            self._modes[-1].append(np.array(y_true, dtype=np.float32).ravel())

    def loss(self, y_true: Any, y_pred: Any) -> Any:
        backend = keras.backend.backend()
        if backend == "jax":
            import jax

            jax.debug.callback(self._record, y_true, ordered=True)
        elif backend == "tensorflow":
            import tensorflow as tf

            def record(y: np.ndarray) -> np.float32:
                self._record(y)
                return np.float32(0)

            tf.numpy_function(record, [y_true], tf.float32, stateful=True)
        else:
            self._record(y_true.detach().cpu().numpy())
        return keras.ops.mean(keras.ops.square(y_pred)) * 1e-3

    def _flush(self) -> None:
        if keras.backend.backend() == "jax":
            import jax

            jax.effects_barrier()

    def on_train_begin(self, logs: Any = None) -> None:
        self._modes.append(self.train)

    def on_test_begin(self, logs: Any = None) -> None:
        self._flush()
        self._modes.append(self.test)

    def on_train_end(self, logs: Any = None) -> None:
        self._flush()
        self._modes.pop()

    on_test_end = on_train_end

    def train_ids(self) -> list[list[int]]:
        return [batch.round().astype(int).tolist() for batch in self.train]

    def test_ids(self) -> list[list[int]]:
        return [batch.round().astype(int).tolist() for batch in self.test]


def id_model(recorder: IdRecorder, *, built: bool = True) -> keras.Model:
    """A model trained with the recorder's loss. `built=False` leaves out the
    Input, so Keras builds the model from a first batch it pulls before epoch 0
    (on jax and torch)."""
    layers = [keras.Input((2,))] if built else []
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=recorder.loss)
    return model


def first_feature_model() -> keras.Model:
    """An unbuilt model that predicts the first feature of each sample: the sample's id."""
    model = keras.Sequential([keras.layers.Lambda(lambda x: x[:, :1])])
    model.compile(loss="mse")
    return model


class StopAt(keras.callbacks.Callback):
    """Raises RuntimeError after `batches` trained batches in total: a crash inside fit."""

    def __init__(self, batches: int):
        super().__init__()
        self.left = batches

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        self.left -= 1
        if self.left == 0:
            self.stop()

    def stop(self) -> None:
        raise RuntimeError("simulated crash")


class StopTrainingAt(StopAt):
    """Sets model.stop_training after `batches` trained batches (a stop mid-epoch)."""

    def stop(self) -> None:
        self.model.stop_training = True


def keras_epochs(loader: Any, steps: int, count: int) -> list[list[list[int]]]:
    """The batches of Keras epochs 0 … count-1 of an uninterrupted `fit(steps_per_epoch=steps)`:
    slices of `steps` batches of each loader epoch, the last one shorter when `steps` does not
    divide the loader (Keras leaves an epoch, saying the input ran out, once its iterator has
    given the loader's length); whole loader epochs when `steps` is the loader's length or more."""
    epochs: list[list[list[int]]] = []
    loader_epoch = 0
    while len(epochs) < count:
        batches = [loader.indices(batch, loader_epoch).tolist() for batch in range(len(loader))]
        epochs += [batches[start : start + steps] for start in range(0, len(batches), steps)]
        loader_epoch += 1
    return epochs[:count]


class EpochLengths(keras.callbacks.Callback):
    """How many batches each Keras epoch trained."""

    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        self.lengths.append(0)

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        self.lengths[-1] = batch + 1
