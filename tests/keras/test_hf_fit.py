"""A Hugging Face datasets.Dataset through real Keras fit on the current backend."""

from __future__ import annotations

import datasets
import keras
import numpy as np
from PIL import Image

import kloader

import image_files as images
from keras_utils import IdRecorder


def test_fit_trains_on_the_loaders_order_of_hf_samples() -> None:
    """Loader(hf_dataset): fit receives exactly the loader's batches (labels are sample ids), 2 workers."""
    pictures = [Image.fromarray(images.pattern(12 + i, 9 + 2 * i, seed=i)) for i in range(10)]
    dataset = datasets.Dataset.from_dict({"image": pictures, "label": list(range(10)), "note": ["x"] * 10})
    source = kloader.HFDataset(dataset, image_size=(6, 6), rescale=1 / 255)
    loader = kloader.Loader(source, batch_size=4, seed=7, transform=images.flip, num_workers=2)
    recorder = IdRecorder()
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-4), loss=recorder.loss)
    model.fit(loader, epochs=2, verbose=0, callbacks=[recorder])
    expected = [loader.indices(b, epoch).tolist() for epoch in range(2) for b in range(len(loader))]
    assert recorder.train_ids() == expected
    assert sorted(np.concatenate(expected[:3]).tolist()) == list(range(10))
