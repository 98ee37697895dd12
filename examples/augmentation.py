"""Augmentation: an ImageDataGenerator-style pipeline in a kloader.Loader, trained with model.fit.

    KERAS_BACKEND=jax python examples/augmentation.py        (or tensorflow, torch)

The augmented batches of every epoch are a pure function of (seed, epoch): the
same with 0 or 2 worker processes, on every run and on every backend.
"""

from __future__ import annotations

import keras
import numpy as np

import kloader
from kloader import augment


def make_images(count: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares (label 1) or bright discs (label 0) on a dark background, as uint8."""
    grid = np.mgrid[:size, :size] - size / 2 + 0.5
    labels = rng.integers(0, 2, size=count)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for image, label in zip(images, labels):
        radius = rng.uniform(size / 6, size / 3)
        inside = np.abs(grid).max(axis=0) < radius if label else np.hypot(*grid) < radius
        image[:] = np.where(inside[..., None], 200, 30) + rng.integers(0, 20, size=(size, size, 3))
    return images, labels


def main() -> None:
    images, labels = make_images(256, 32, np.random.default_rng(0))
    pipeline = augment.from_image_data_generator(
        rotation_range=20,
        width_shift_range=0.1,
        height_shift_range=0.1,
        zoom_range=0.1,
        horizontal_flip=True,
        brightness_range=(0.8, 1.2),
        rescale=1 / 255,
    )
    print(pipeline)
    train = kloader.Loader((images, labels), batch_size=32, seed=42, transform=pipeline, num_workers=2)

    in_process = kloader.Loader((images, labels), batch_size=32, seed=42, transform=pipeline)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(train, in_process)), "workers must agree"
    train.set_epoch(0)

    # Seeded initial weights too, so that the whole run repeats (per backend: each
    # backend draws its own initial weights from the seed).
    init = keras.initializers.HeNormal
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=init(seed=1)),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=init(seed=2)),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(2, activation="softmax", kernel_initializer=init(seed=3)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(train, epochs=5, verbose=2)
    print(f"backend: {keras.backend.backend()}, final accuracy: {history.history['accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main()
