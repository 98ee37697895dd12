"""ImageFolder through real Keras on the current backend: what fit trains on, what predict returns."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import kloader

import image_files as images
from keras_utils import IdRecorder
from utils import workers_up


def id_folder(root: Path, count: int) -> kloader.ImageFolder:
    """Images of mixed formats and sizes whose label is their own sample index."""
    paths = []
    for i in range(count):
        extension = ("png", "jpg", "bmp")[i % 3]
        size = (10 + 3 * i, 8 + i)
        paths.append(str(images.write_pattern(root / f"{i:02d}.{extension}", size=size, seed=i)))
    return kloader.ImageFolder(paths=paths, labels=list(range(count)), image_size=(6, 6))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fit_trains_on_the_loaders_order_of_image_samples(tmp_path: Path, num_workers: int) -> None:
    """3 epochs of fit on an augmented ImageFolder: the model receives exactly the loader's
    batches of every epoch (labels are sample ids), on every backend and worker count."""
    folder = id_folder(tmp_path, 10)
    loader = workers_up(
        kloader.Loader(folder, batch_size=4, seed=42, transform=images.flip, num_workers=num_workers)
    )
    recorder = IdRecorder()
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-4), loss=recorder.loss)
    model.fit(loader, epochs=3, verbose=0, callbacks=[recorder])
    expected = [loader.indices(b, epoch).tolist() for epoch in range(3) for b in range(len(loader))]
    assert recorder.train_ids() == expected
    assert all(sorted(i for b in expected[3 * e : 3 * e + 3] for i in b) == list(range(10)) for e in range(3))
    assert loader.epoch == 3 and loader.worker_pids == []


@pytest.mark.parametrize("num_workers", [0, 2])
def test_predict_rows_line_up_with_filenames(tmp_path: Path, num_workers: int) -> None:
    """predict on a label_mode=None folder returns one row per file, in `filenames` order."""
    values = {}
    for i in range(11):
        # Nested folders and names whose order differs from the order they were written in.
        name = os.path.join(f"part{i % 3}", f"img_{(7 * i) % 11:02d}.png")
        values[name] = 20 * i + 5
        images.write_solid(tmp_path / name, (values[name],) * 3, size=(9 + i, 7 + 2 * i))
    folder = kloader.ImageFolder(tmp_path, image_size=(5, 5), label_mode=None)
    assert folder.filenames == sorted(values)
    loader = workers_up(kloader.Loader(folder, batch_size=4, shuffle=False, num_workers=num_workers))
    model = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    predictions = model.predict(loader, verbose=0)
    assert predictions.shape == (11, 3)
    assert np.round(predictions[:, 0]).astype(int).tolist() == [values[name] for name in folder.filenames]
    assert loader.worker_pids == []


def test_fit_learns_from_an_image_folder(tmp_path: Path) -> None:
    """A small CNN fit on a real folder (red vs blue JPEGs with noise) reaches high accuracy,
    with validation from the folder's split."""
    rng = np.random.default_rng(0)
    for label, color in enumerate([(200, 40, 40), (40, 40, 200)]):
        for j in range(24):
            noise = rng.normal(0, 40, size=(20, 24, 3))
            pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
            images.write(tmp_path / f"class{label}" / f"{j}.jpg", images.Image.fromarray(pixels))
    train, validation = kloader.ImageFolder(tmp_path, image_size=12, rescale=1 / 255).split(0.25, seed=1)
    # Seeded initializers, not keras.utils.set_random_seed (which would import TensorFlow).
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(
                4, 3, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(0)
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                2, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(1)
            ),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(
        kloader.Loader(train, batch_size=8, seed=3),
        validation_data=kloader.Loader(validation, batch_size=8, shuffle=False),
        epochs=8,
        verbose=0,
    )
    assert history.history["val_accuracy"][-1] >= 0.9, history.history


def augmented_loader(num_workers: int = 0) -> kloader.Loader:
    """23 random 16x16 RGB images through ImageDataGenerator-style augmentation."""
    images_ = np.random.default_rng(0).integers(0, 256, (23, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(23, dtype=np.int64)
    transform = images.image_data_generator_like()
    return kloader.Loader(
        (images_, labels), batch_size=5, seed=11, transform=transform, num_workers=num_workers
    )


def batches(loader: kloader.Loader, epochs: int) -> list[Any]:
    return [batch for _ in range(epochs) for batch in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fit_trains_on_exactly_the_augmented_batches(num_workers: int) -> None:
    """A real model.fit on the current backend receives, as x, exactly the augmented images
    computed in this process, batch by batch, over 2 epochs."""
    import keras

    from keras_utils import IdRecorder

    class InputRecorder(IdRecorder):
        """Records the model's output, which is its input, flattened."""

        def loss(self, y_true: Any, y_pred: Any) -> Any:
            return super().loss(y_pred, y_pred)

    class PassThrough(keras.layers.Layer):
        """Returns its input unchanged (+ 0 * w, so there is a weight to train)."""

        def build(self, input_shape: Any) -> None:
            self.w = self.add_weight(shape=(), initializer="ones")

        def call(self, x: Any) -> Any:
            return x + 0.0 * self.w

    recorder = InputRecorder()
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), PassThrough()])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=recorder.loss)
    loader = workers_up(augmented_loader(num_workers))
    model.fit(loader, epochs=2, verbose=0, callbacks=[recorder])
    expected = [batch[0].reshape(-1) for batch in batches(augmented_loader(), 2)]
    assert len(recorder.train) == len(expected) == 10
    for i, (got, want) in enumerate(zip(recorder.train, expected)):
        assert want.dtype == np.float32 and np.ptp(want) > 0
        np.testing.assert_array_equal(got, want, err_msg=f"batch {i}")
