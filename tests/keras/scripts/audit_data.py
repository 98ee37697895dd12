"""Data for the `python -m kloader audit` tests: what users pass to fit.

`textbook` is the PyDataset of the tutorials: it shuffles its indices in
`on_epoch_end` and runs with Keras's process workers. `loader` is the same
data as a kloader.Loader. Both are small, so an audit of them takes seconds.
"""

from __future__ import annotations

import time

import keras
import numpy as np

NUM_SAMPLES = 100
BATCH_SIZE = 10


def arrays() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(NUM_SAMPLES * 2, dtype="float32").reshape(NUM_SAMPLES, 2)
    y = np.arange(NUM_SAMPLES, dtype="int64") % 2
    return x, y


class ShufflingDataset(keras.utils.PyDataset):
    """The textbook recipe: a permutation kept in self.indices, reshuffled in on_epoch_end."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, **kwargs: object):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.indices = np.arange(len(x))
        np.random.shuffle(self.indices)

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.indices[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[chosen], self.y[chosen]

    def on_epoch_end(self) -> None:
        np.random.shuffle(self.indices)


def textbook() -> ShufflingDataset:
    np.random.seed(0)
    x, y = arrays()
    return ShufflingDataset(x, y, BATCH_SIZE, workers=2, use_multiprocessing=True)


def loader() -> keras.utils.PyDataset:
    import kloader

    return kloader.Loader(arrays(), batch_size=BATCH_SIZE, seed=42)


def loader_without_seed() -> keras.utils.PyDataset:
    import kloader

    return kloader.Loader(arrays(), batch_size=BATCH_SIZE)


def textbook_without_workers() -> ShufflingDataset:
    np.random.seed(0)
    x, y = arrays()
    return ShufflingDataset(x, y, BATCH_SIZE)


def keep(sample: object, rng: np.random.Generator) -> object:
    """A transform that leaves samples as they are (so audit can recognise them)."""
    return sample


def loader_with_workers() -> keras.utils.PyDataset:
    import kloader

    return kloader.Loader(*arrays(), batch_size=BATCH_SIZE, seed=42, transform=keep, num_workers=2)


def hangs() -> keras.utils.PyDataset:
    """Data that never comes: what the audit's --timeout is for."""
    print("reading the data ...", flush=True)
    time.sleep(600)
    raise AssertionError("the audit should have stopped this run")
