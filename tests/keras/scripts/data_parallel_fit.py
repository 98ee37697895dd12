"""Trains with keras.distribution.DataParallel over 4 CPU devices and records what the model got.

Run by tests/keras/test_distribution.py in a fresh process: XLA's device count
must be set before JAX starts. Prints one JSON line: the labels of every
training batch in the order the model received them, the loader's expected
labels, the sharding of the batches inside the train step, and the loader's
epoch after fit.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
# The 4 devices are the host's: on a machine with one GPU, JAX would otherwise train on that one.
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import keras
import numpy as np

import kloader

from utils import IdDataset, expected_labels, jitter_label


def main() -> None:
    num_workers = int(sys.argv[1])
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    received: list[list[float]] = []
    shardings: list[str] = []  # how the labels are laid out inside the train step

    def loss(y_true: object, y_pred: object) -> object:
        # Unordered: JAX has no ordered effects over several devices. Steps run
        # one after another here, and the order is checked against the loader's.
        jax.debug.callback(lambda y: received.append(np.asarray(y).ravel().tolist()), y_true)
        shape = tuple(y_true.shape)  # type: ignore[attr-defined]
        jax.debug.inspect_array_sharding(
            y_true,
            callback=lambda s: shardings.append(
                f"{len(s.device_set)} devices, shards of {s.shard_shape(shape)}"
            ),
        )
        return keras.ops.mean(keras.ops.square(y_pred)) * 1e-3

    loader = kloader.Loader(
        IdDataset(48), batch_size=8, seed=4, transform=jitter_label, num_workers=num_workers
    )
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=loss)
    model.fit(loader, epochs=3, verbose=0)
    jax.effects_barrier()
    expected = [batch.tolist() for batch in expected_labels(loader, 3)]
    print(
        json.dumps(
            {
                "devices": len(jax.devices()),
                "received": received,
                "expected": expected,
                "shardings": sorted(set(shardings)),
                "epoch": loader.epoch,
            }
        )
    )


if __name__ == "__main__":
    main()
