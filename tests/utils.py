"""Shared test helpers: datasets whose samples carry their own index, a Keras
recorder of the samples a model actually receives, and the checkpoint helper.

This module must not import Keras: worker processes import it to unpickle the
datasets and transforms below, and a worker should never load a backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import kloader
from kloader._core import tree


class IdDataset:
    """Map-style dataset: sample i is (features [i, -i], label i), both float32."""

    def __init__(self, num_samples: int):
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.float32]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        return np.array([index, -index], dtype=np.float32), np.float32(index)


def id_arrays(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The same samples as IdDataset, as (x, y) arrays."""
    ids = np.arange(num_samples, dtype=np.float32)
    return np.stack([ids, -ids], axis=1), ids


def jitter(sample: tuple[np.ndarray, Any], rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """A random transform: adds rng noise to the features, keeps the label."""
    features, label = sample
    return features + rng.normal(size=features.shape).astype(np.float32), label


def jitter_label(
    sample: tuple[np.ndarray, np.float32], rng: np.random.Generator
) -> tuple[np.ndarray, np.float32]:
    features, label = sample
    return features, np.float32(label + rng.uniform(-0.25, 0.25))


def expected_labels(loader: kloader.Loader, epochs: int) -> list[np.ndarray]:
    """The labels of every batch of `epochs` epochs, made in this process."""
    reference = kloader.Loader(
        IdDataset(loader.num_samples), batch_size=loader.batch_size, seed=loader.seed, transform=jitter_label
    )
    return [batch[1] for _ in range(epochs) for batch in reference]


def assert_labels(recorded: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(recorded) == len(expected), f"{len(recorded)} batches trained, expected {len(expected)}"
    for i, (got, want) in enumerate(zip(recorded, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"batch {i}")


def slow_jitter(sample: tuple[np.ndarray, Any], rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """jitter that takes 5 ms, so workers cannot run far ahead of the consumer."""
    time.sleep(0.005)
    return jitter(sample, rng)


def expected_ids(loader: kloader.Loader, epochs: range) -> list[list[int]]:
    """The sample ids of every batch of `epochs`, by kloader's pure order."""
    return [loader.indices(b, epoch).tolist() for epoch in epochs for b in range(len(loader))]


def assert_state_restores_rest(make_loader: Callable[[], kloader.Loader], epochs: int = 2) -> None:
    """Saves the state after every batch; a fresh loader restored from it must
    yield exactly the batches that followed, through the end of `epochs`."""
    loader = make_loader()
    reference: list[Any] = []
    states: list[dict[str, Any]] = [loader.state_dict()]
    for _ in range(epochs):
        for batch in loader:
            reference.append(batch)
            states.append(loader.state_dict())
    for position, state in enumerate(states[:-1]):
        restored = make_loader()
        restored.load_state_dict(state)
        rest: list[Any] = []
        while position + len(rest) < len(reference):
            before = len(rest)
            rest.extend(restored)
            assert len(rest) > before, f"a loader restored from {state} yielded nothing"
        assert_batches_equal(rest, reference[position:], what=f"restored from state {state}")


def assert_batches_equal(actual: list[Any], expected: list[Any], what: str = "") -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} batches, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        a_leaves, a_structure = tree.flatten(a)
        e_leaves, e_structure = tree.flatten(e)
        assert a_structure == e_structure, f"{what}: batch {i} has another structure"
        for a_leaf, e_leaf in zip(a_leaves, e_leaves):
            assert a_leaf.dtype == e_leaf.dtype, (
                f"{what}: batch {i} has dtype {a_leaf.dtype}, not {e_leaf.dtype}"
            )
            np.testing.assert_array_equal(a_leaf, e_leaf, err_msg=f"{what}: batch {i} differs")


def wait_until_a_worker_is_up(loader: kloader.Loader, timeout: float = 60) -> None:
    """Waits (without asking for batches) until a worker of `loader` can make them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = loader._pool
        if pool is not None and pool._processes is not None and pool._processes.some_worker_started():
            return
        time.sleep(0.01)
    raise AssertionError(f"no worker was up after {timeout} s")


def batches_with_workers_up(loader: kloader.Loader, epochs: int) -> list[Any]:
    """The batches of `epochs` epochs, all but the first made by workers: the main process
    makes batches until a worker is up, so a fast loop could otherwise see none from them."""
    passes = iter(loader)
    made = [next(passes)]
    wait_until_a_worker_is_up(loader)
    made += list(passes)
    return made + [batch for _ in range(epochs - 1) for batch in loader]


def workers_up(loader: kloader.Loader) -> kloader.Loader:
    """`loader` with its workers started and one of them up, still at epoch 0, batch 0: a
    Keras call on it then gets its batches from workers (a short fit would otherwise be over
    before they are up, every batch made in this process)."""
    if loader.num_workers:
        next(iter(loader))
        wait_until_a_worker_is_up(loader)
        loader.set_epoch(0)
    return loader
