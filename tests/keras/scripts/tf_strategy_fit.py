"""Trains under a tf.distribute strategy and records which samples each step received.

Run by tests/keras/test_distribution.py in a fresh process: TensorFlow's
logical devices must be set before it starts. Arguments: the strategy
("mirrored": MirroredStrategy over 2 logical CPUs; "one": OneDeviceStrategy),
the source ("arrays", gathered by TensorFlow; "transform", batches made in
Python) and num_workers. Prints one JSON line: the sorted sample ids of every
step (the replicas' halves together), the loader's expected ids, and its
epoch after fit.
"""

from __future__ import annotations

import json
import os
import sys
import threading

os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras
import numpy as np
import tensorflow as tf

import kloader

from utils import id_arrays, jitter


def main() -> None:
    strategy_name, source, num_workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cpu = tf.config.list_physical_devices("CPU")[0]  # before TensorFlow starts its runtime
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = (
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        if strategy_name == "mirrored"
        else tf.distribute.OneDeviceStrategy("/cpu:0")
    )
    lock = threading.Lock()
    step: list[int] = []
    steps: list[list[int]] = []

    def record(ids: np.ndarray) -> np.float32:
        with lock:
            step.extend(np.asarray(ids).round().astype(int).ravel().tolist())
        return np.float32(0)

    def loss(y_true: object, y_pred: object) -> object:
        # Each replica records its part of the step's batch.
        tf.numpy_function(record, [y_true], tf.float32, stateful=True)
        return keras.ops.mean(keras.ops.square(y_pred)) * 1e-3

    class EndOfStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            with lock:
                steps.append(sorted(step))
                step.clear()

    x, y = id_arrays(100)
    transform = jitter if source == "transform" else None
    loader = kloader.Loader((x, y), batch_size=16, seed=5, transform=transform, num_workers=num_workers)
    with strategy.scope():
        model = keras.Sequential([keras.layers.Dense(1)])  # unbuilt: Keras builds from a pulled batch
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=loss)
    model.fit(loader, epochs=3, verbose=0, callbacks=[EndOfStep()])
    expected = [sorted(loader.indices(b, e).tolist()) for e in range(3) for b in range(len(loader))]
    print(json.dumps({"received": steps, "expected": expected, "epoch": loader.epoch}))


if __name__ == "__main__":
    main()
