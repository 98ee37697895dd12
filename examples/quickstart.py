"""Quickstart: NumPy arrays -> kloader.Loader -> model.fit, on whichever Keras backend is selected.

    KERAS_BACKEND=jax python examples/quickstart.py        (or tensorflow, torch)

The batches of every epoch are a pure function of (seed, epoch): run it twice,
or on another backend, and the model sees the same samples in the same order.
"""

from __future__ import annotations

import keras
import numpy as np

import kloader


def flip_sign(sample: tuple[np.ndarray, np.int64], rng: np.random.Generator) -> tuple[np.ndarray, np.int64]:
    """A seeded augmentation: rng depends only on (seed, epoch, sample index)."""
    features, label = sample
    noise = rng.normal(scale=0.05, size=features.shape).astype(np.float32)
    return features + noise, label


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)

    train = kloader.Loader((x[:1600], y[:1600]), batch_size=64, seed=42, transform=flip_sign, num_workers=2)
    validation = kloader.Loader((x[1600:], y[1600:]), batch_size=256, shuffle=False)

    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=validation, epochs=5, verbose=2)

    print(f"backend: {keras.backend.backend()}, seed: {train.seed}, next epoch: {train.epoch}")
    print(f"first batch of epoch 0 holds samples {train.indices(0, epoch=0)[:8].tolist()} ...")
    print(f"final validation accuracy: {history.history['val_accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main()
